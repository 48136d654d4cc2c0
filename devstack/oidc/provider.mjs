// The local stand-in for Microsoft Entra ID: a real OpenID Connect provider (npm `oidc-provider`), shaped like
// Entra where our code and MSAL.js look. Started by devstack/oidc/__init__.py; never used outside a local stack.
//
//   node provider.mjs --port 0 --cert server.pem --key server.key --seed seed.json [--redirect-uri URI ...]
//                     [--exit-with-stdin]
//
// What is Entra-like, and why:
// - One Provider per tenant, each with issuer https://HOST/{tenantId}/v2.0 and Entra's endpoint paths
//   (/{tenantId}/oauth2/v2.0/authorize|token, /{tenantId}/discovery/v2.0/keys,
//   /{tenantId}/v2.0/.well-known/openid-configuration), all signing with ONE key set, as Entra's keys are
//   common to all tenants. /common/v2.0/.well-known/openid-configuration carries the literal issuer template
//   https://HOST/{tenantid}/v2.0 that a multi-tenant validator substitutes the token's `tid` into.
// - Access tokens for the API are RS256 JWTs (resource indicator api://{apiClientId}, derived from the scope as
//   Entra does) with Entra v2 claims: aud = API client id, tid, oid, sub, azp, roles, scp (users) or
//   idtyp "app" (client credentials), name, preferred_username, ver "2.0", uti; header typ "JWT".
// - Key rotation without restart: POST /_admin/keys/rotate puts a new key first (it signs from then on) and keeps
//   the old one published; POST /_admin/keys/retire drops every key but the active one. Providers are rebuilt
//   around the new key set; sessions, grants, codes and refresh tokens live in the shared memory adapter and
//   survive. Admin routes need the bearer token given in OIDC_ADMIN_TOKEN.
//
// Prints one JSON line {"ready": true, "port": N} on stdout once it serves.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    cert: { type: 'string' },
    key: { type: 'string' },
    seed: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});

const seed = JSON.parse(readFileSync(args.seed, 'utf8'));
const ADMIN_TOKEN = process.env.OIDC_ADMIN_TOKEN || '';
const API_ID = seed.api.clientId;
const API_RESOURCE = `api://${API_ID}`;
const API_SCOPES = ['Fleet.Access']; // delegated scopes the API exposes (shared/auth/app_roles.json "scopes")
const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'];
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];
const users = new Map(seed.users.map((u) => [u.oid, u]));
const daemons = new Map(seed.daemons.map((d) => [d.clientId, d]));
const redirectUris = new Set(args['redirect-uri']);

// ---- keys: newest first; the first one signs -------------------------------------------------------------------

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const thumbprint = crypto.hash('sha256', JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n }), 'base64url');
  return { ...jwk, kid: thumbprint.slice(0, 27), use: 'sig', alg: 'RS256' };
}

let signingKeys = [newSigningKey()];
const publicJwks = () => ({
  keys: signingKeys.map(({ kty, kid, use, alg, n, e }) => ({ kty, use, kid, alg, n, e })),
});

// ---- Entra-shaped claims ----------------------------------------------------------------------------------------

// Entra's `sub` is pairwise (per user and application); `oid` is the stable id. Local tokens keep them apart so
// code that keys on `sub` instead of `oid` fails here as it would in Azure.
const pairwiseSub = (tid, oid, clientId) => crypto.hash('sha256', `${tid}|${oid}|${clientId}`, 'base64url').slice(0, 43);

function apiScopeName(scope) {
  for (const prefix of [`${API_RESOURCE}/`, `${API_ID}/`]) {
    if (scope.startsWith(prefix)) return scope.slice(prefix.length);
  }
  return undefined;
}

function requestsApi(scopeParam) {
  return (scopeParam || '').split(' ').some((s) => apiScopeName(s) !== undefined);
}

function entraAccessToken(tenantId, token, structured) {
  const base = structured.payload;
  const now = base.iat;
  const uti = base.jti;
  const azp = base.client_id;
  const payload = {
    aud: API_ID,
    iss: base.iss,
    iat: now,
    nbf: now,
    exp: base.exp,
  };
  if (token.kind === 'ClientCredentials') {
    const daemon = daemons.get(azp);
    Object.assign(payload, { azp, azpacr: '1', idtyp: 'app', oid: daemon.oid });
    if (daemon.roles.length) payload.roles = [...daemon.roles];
    Object.assign(payload, { sub: daemon.oid, tid: tenantId, uti, ver: '2.0' });
  } else {
    const user = users.get(token.accountId);
    const granted = new Set();
    for (const scope of (base.scope || '').split(' ')) {
      const name = apiScopeName(scope);
      if (name === '.default') API_SCOPES.forEach((s) => granted.add(s));
      else if (name) granted.add(name);
    }
    Object.assign(payload, { azp, azpacr: '0', name: user.name, oid: user.oid, preferred_username: user.username });
    if (user.roles.length) payload.roles = [...user.roles];
    Object.assign(payload, {
      scp: [...granted].join(' '),
      sub: pairwiseSub(tenantId, user.oid, azp),
      tid: tenantId,
      uti,
      ver: '2.0',
    });
  }
  structured.payload = payload;
  structured.header = { typ: 'JWT' };
}

// ---- storage shared by every tenant's Provider and across rebuilds ----------------------------------------------

// oidc-provider's adapter interface (upsert/find/findByUid/findByUserCode/consume/destroy/revokeByGrantId) over one
// Map. The built-in memory adapter keeps a store per Provider instance, so a key rotation (which rebuilds the
// Providers) would lose every session, grant and refresh token; Entra's rotation does not.
const store = new Map(); // key -> { value, expiresAt }

function stored(key) {
  const entry = store.get(key);
  if (entry?.expiresAt && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry?.value;
}

const remember = (key, value, expiresIn) => store.set(key, { value, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });

setInterval(() => { for (const key of store.keys()) stored(key); }, 60_000).unref();

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    remember(key, payload, expiresIn);
    if (payload.grantId) {
      const members = stored(`grant:${payload.grantId}`) || new Set();
      members.add(key);
      remember(`grant:${payload.grantId}`, members);
    }
    if (payload.userCode) remember(`userCode:${payload.userCode}`, id, expiresIn);
    if (payload.uid) remember(`sessionUid:${payload.uid}`, id, expiresIn);
  }

  async find(id) { return stored(this.key(id)); }

  async findByUid(uid) {
    const id = stored(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = stored(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = stored(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of stored(`grant:${grantId}`) || []) store.delete(key);
    store.delete(`grant:${grantId}`);
  }
}

// ---- one Provider per tenant -----------------------------------------------------------------------------------

let origin = '';
const providers = new Map(); // tenantId -> Provider

function clientsFor(tenantId) {
  const clients = [{
    client_id: seed.dashboard.clientId,
    client_name: seed.dashboard.name,
    application_type: 'web',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [...redirectUris],
    post_logout_redirect_uris: [...redirectUris], // MSAL's logoutRedirect comes back to the page
  }];
  for (const daemon of seed.daemons) {
    if (daemon.tenantId !== tenantId) continue;
    clients.push({
      client_id: daemon.clientId,
      client_name: daemon.name,
      client_secret: daemon.secret,
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    });
  }
  return clients;
}

function buildProvider(tenant) {
  const tenantId = tenant.id;
  const provider = new Provider(`${origin}/${tenantId}/v2.0`, {
    adapter: SharedMemoryAdapter,
    clients: clientsFor(tenantId),
    jwks: { keys: signingKeys },
    cookies: {
      keys: COOKIE_KEYS,
      // One host serves every tenant: a session of one tenant must not be offered to another.
      names: { session: `_session.${tenantId}`, interaction: `_interaction.${tenantId}`, resume: `_interaction_resume.${tenantId}` },
    },
    routes: {
      authorization: '/oauth2/v2.0/authorize',
      token: '/oauth2/v2.0/token',
      jwks: '/discovery/v2.0/keys',
      userinfo: '/oidc/userinfo',
      end_session: '/oauth2/v2.0/logout',
      device_authorization: '/oauth2/v2.0/devicecode',
      code_verification: '/oauth2/deviceauth',
    },
    scopes: OIDC_SCOPES,
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'oid', 'tid', 'ver'],
      email: ['email'],
    },
    conformIdTokenClaims: false, // Entra's ID tokens carry the profile claims
    async findAccount(_ctx, id) {
      const user = users.get(id);
      if (!user || user.tenantId !== tenantId) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, name: user.name, preferred_username: user.username, email: user.username,
            oid: user.oid, tid: tenantId, ver: '2.0',
          };
        },
      };
    },
    interactions: { url: (_ctx, interaction) => `/${tenantId}/interaction/${interaction.uid}` },
    // The dashboard is a first-party app an admin consented for: no consent page, as in Entra after admin consent.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(OIDC_SCOPES.join(' '));
      grant.addResourceScope(API_RESOURCE, apiResourceScopes().join(' '));
      await grant.save();
      return grant;
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    clientBasedCORS(_ctx, requestOrigin, client) {
      return client.redirectUris.some((uri) => URL.parse(uri)?.origin === requestOrigin);
    },
    pkce: { required: () => true },
    ttl: { AccessToken: 3600, ClientCredentials: 3600, IdToken: 3600, AuthorizationCode: 600, RefreshToken: 86400, Session: 86400, Interaction: 600, Grant: 86400 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Entra names the resource by the scope's prefix (api://{id}/Fleet.Access); no `resource` parameter.
        async defaultResource(ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          return requestsApi(ctx.oidc.params.scope) ? API_RESOURCE : undefined;
        },
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== API_RESOURCE) throw new Provider.errors.InvalidTarget();
          return {
            scope: apiResourceScopes().join(' '),
            audience: API_ID,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 3600,
            jwt: { sign: { alg: 'RS256', kid: signingKeys[0].kid } },
          };
        },
      },
    },
    formats: { customizers: { jwt: async (_ctx, token, structured) => entraAccessToken(tenantId, token, structured) } },
  });
  provider.proxy = false;
  // MSAL builds the account from client_info (base64url {uid, utid}) when it sends client_info=1, as Entra does.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'token' && ctx.body?.access_token && ctx.oidc.entities.Account) {
      const info = { uid: ctx.oidc.entities.Account.accountId, utid: tenantId };
      ctx.body.client_info = Buffer.from(JSON.stringify(info)).toString('base64url');
    }
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc server_error', err));
  // The reason behind a refused grant goes to the log (the response says only invalid_grant, as it should).
  for (const event of ['grant.error', 'authorization.error']) {
    provider.on(event, (_ctx, err) => console.error(`${tenantId} ${event}: ${err.error} ${err.error_detail || err.message}`));
  }
  return provider;
}

function apiResourceScopes() {
  return [...API_SCOPES, '.default'].map((s) => `${API_RESOURCE}/${s}`);
}

function rebuildProviders() {
  for (const tenant of seed.tenants) providers.set(tenant.id, buildProvider(tenant));
}

// ---- the sign-in page (the provider's interaction API) ----------------------------------------------------------

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(tenant, uid, loginHint, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in - ${escapeHtml(tenant.name)}</title></head>
<body><h1>Sign in</h1><p>${escapeHtml(tenant.name)} (local identity provider)</p>
${error ? `<p role="alert" id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/${tenant.id}/interaction/${uid}/login" autocomplete="off">
<label>Username <input name="login" id="login" value="${escapeHtml(loginHint || '')}" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="submit">Sign in</button></form></body></html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const readForm = async (req) => new URLSearchParams(await readBody(req));

async function interaction(tenant, provider, uid, action, req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (details.prompt.name !== 'login') {
    // Consent is granted by loadExistingGrant; any other prompt would be a configuration error here.
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: `unexpected prompt ${details.prompt.name}` });
  }
  if (req.method === 'GET' && !action) {
    return sendHtml(res, 200, loginPage(tenant, uid, details.params.login_hint));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const username = (form.get('login') || '').trim().toLowerCase();
    const user = seed.users.find((u) => u.username.toLowerCase() === username && u.tenantId === tenant.id);
    if (!user || form.get('password') !== seed.password) {
      return sendHtml(res, 200, loginPage(tenant, uid, username, 'Your account or password is incorrect.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.oid } }, { mergeWithLastSubmission: false });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

// ---- the Entra "common" endpoint and admin routes ---------------------------------------------------------------

function commonConfiguration() {
  const base = `${origin}/common`;
  return {
    token_endpoint: `${base}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
    jwks_uri: `${base}/discovery/v2.0/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code'],
    scopes_supported: OIDC_SCOPES,
    issuer: `${origin}/{tenantid}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${base}/oidc/userinfo`,
    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'name', 'preferred_username', 'oid', 'tid', 'ver', 'email'],
    code_challenge_methods_supported: ['S256'],
    tenant_region_scope: null,
    cloud_instance_name: 'local',
  };
}

async function admin(path, req, res) {
  if (req.headers.authorization !== `Bearer ${ADMIN_TOKEN}` || !ADMIN_TOKEN || req.method !== 'POST') {
    return sendJson(res, 403, { error: 'forbidden' });
  }
  if (path === '/_admin/keys/rotate') {
    signingKeys = [newSigningKey(), ...signingKeys];
  } else if (path === '/_admin/keys/retire') {
    signingKeys = signingKeys.slice(0, 1);
  } else if (path === '/_admin/redirect-uris') {
    // The dashboard's address is known only once the function host listens; {"add": [uri, ...]}.
    const { add = [] } = JSON.parse((await readBody(req)) || '{}');
    for (const uri of add) redirectUris.add(uri);
  } else {
    return sendJson(res, 404, { error: 'not_found' });
  }
  rebuildProviders();
  return sendJson(res, 200, { active: signingKeys[0].kid, published: signingKeys.map((k) => k.kid), redirectUris: [...redirectUris] });
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'access-control-allow-origin': '*', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function sendHtml(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// ---- routing ---------------------------------------------------------------------------------------------------

async function handle(req, res) {
  const url = new URL(req.url, origin);
  const path = url.pathname;
  if (path.startsWith('/_admin/')) return admin(path, req, res);
  if (path === '/common/v2.0/.well-known/openid-configuration' || path === '/organizations/v2.0/.well-known/openid-configuration') {
    return sendJson(res, 200, commonConfiguration());
  }
  if (path === '/common/discovery/v2.0/keys' || path === '/organizations/discovery/v2.0/keys') {
    return sendJson(res, 200, publicJwks());
  }
  const [, tenantId, ...rest] = path.split('/');
  const tenant = seed.tenants.find((t) => t.id === tenantId);
  const provider = providers.get(tenantId);
  if (!tenant || !provider) {
    return sendJson(res, 400, { error: 'invalid_tenant', error_description: `tenant '${tenantId}' not found (local provider: use a tenant id)` });
  }
  if (rest[0] === 'interaction') return interaction(tenant, provider, rest[1], rest[2], req, res);

  // Entra's discovery sits under /v2.0; the provider's own route is /.well-known/openid-configuration.
  let inner = path.slice(tenantId.length + 1) || '/';
  if (inner === '/v2.0/.well-known/openid-configuration') inner = '/.well-known/openid-configuration';
  if (inner === '/oauth2/v2.0/authorize' && url.searchParams.get('prompt') === 'select_account') {
    url.searchParams.set('prompt', 'login'); // Entra's account picker; oidc-provider knows login, consent, none
  }
  if (inner === '/oauth2/v2.0/token' && req.method === 'POST') {
    // oidc-provider keeps offline_access only when prompt=consent (OpenID Connect Core); Entra grants it without,
    // and MSAL repeats it on every refresh. Drop it from refresh requests so those match the refresh token.
    const form = await readForm(req);
    if (form.get('grant_type') === 'refresh_token' && form.has('scope')) {
      form.set('scope', form.get('scope').split(' ').filter((s) => s && s !== 'offline_access').join(' '));
    }
    req.body = form.toString(); // the provider reads a pre-read body from req.body
  }
  req.originalUrl = `/${tenantId}${inner}${url.search}`;
  req.url = `${inner}${url.search}`;
  return provider.callback()(req, res);
}

const server = https.createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) }, (req, res) => {
  handle(req, res).catch((err) => {
    console.error('oidc request failed', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.end();
  });
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  origin = `https://${args.host}:${port}`;
  rebuildProviders();
  process.stdout.write(`${JSON.stringify({ ready: true, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
// Started by Python with a pipe on stdin: when that process dies, however it dies, the pipe closes and so do we.
if (args['exit-with-stdin']) process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
