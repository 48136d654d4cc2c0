"""The function app: registers the Blueprint of every module in functions/ and nothing else."""

import importlib
import pkgutil

import azure.functions as func

import functions

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for module in sorted(m.name for m in pkgutil.iter_modules(functions.__path__)):
    app.register_functions(importlib.import_module(f"functions.{module}").bp)
