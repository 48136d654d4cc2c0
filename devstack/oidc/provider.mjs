// The local stand-in for Microsoft Entra ID: a real OpenID Connect provider (npm `oidc-provider`), shaped like
// Entra where our code and MSAL.js look. Started by devstack/oidc/__init__.py; never used outside a local stack.
//
//   node provider.mjs --port 0 --cert server.pem --key server.key --seed seed.json [--redirect-uri URI ...]
//                     [--device-code-ttl 900] [--device-poll-interval 5] [--graph-token-ttl 3600]
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
// - The device authorization grant (RFC 8628) as Entra serves it to the car sign-in client (seed.signinClient):
//   POST /{authority}/oauth2/v2.0/devicecode and the device_code / refresh_token grants at
//   /{authority}/oauth2/v2.0/token, for authority common, organizations, consumers or a tenant id, which decides
//   who may sign in (any account; work only; personal only; that tenant's only). One more Provider, the "device"
//   one, serves every request of that client whatever the authority (the authority travels as the extra param
//   `authority`), with oidc-provider's own deviceFlow: the person opens https://HOST/devicelogin, enters the code,
//   signs in, sees the permissions with Accept / Decline. Its tokens name the account's own tenant like Entra's
//   /common does: iss https://HOST/{tid}/v2.0 in the ID token (re-signed after the provider made it) and in the
//   Graph access token (aud https://graph.microsoft.com, scp; personal accounts never get OnlineMeetings.*).
//   Errors carry Entra's body (error_codes, trace and correlation ids, AADSTS text): authorization_pending
//   (70016), slow_down (polled again before `interval` elapsed; Entra does not document it, RFC 8628 does),
//   expired_token (70020), authorization_declined (Entra's documented name for the person's Decline; RFC 8628
//   says access_denied), bad_verification_code (unknown device code), invalid_grant 50173 once an account's grants
//   are revoked (POST /_admin/revoke-grants {"username"}: a password reset). Refresh tokens of this client rotate
//   and stay valid after use (Entra's are not single-use); oidc-provider's reuse detection is off for them.
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
    'device-code-ttl': { type: 'string', default: '900' }, // Entra's device codes live 15 minutes
    'device-poll-interval': { type: 'string', default: '5' }, // Entra's interval
    'graph-token-ttl': { type: 'string', default: '3600' }, // Entra's Graph access tokens: 60-90 minutes
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
// Driver accounts also sign in to the platform's API (their own sign-ins at cars: GET /api/me/cars), with no roles.
const apiUsers = [...seed.users, ...(seed.accounts || []).map((a) => ({ ...a, roles: [] }))];
const users = new Map(apiUsers.map((u) => [u.oid, u]));
// Who can sign in with the device flow: the driver accounts and every seeded user (all are work accounts but those
// of the Microsoft accounts tenant). They get Graph tokens, never the API's app roles.
const PERSONAL_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad'; // Entra's tenant of all personal Microsoft accounts
const SIGNIN = seed.signinClient;
const people = new Map([...seed.users, ...(seed.accounts || [])].map((p) => [p.oid, {
  username: p.username, oid: p.oid, tenantId: p.tenantId, name: p.name, personal: p.tenantId === PERSONAL_TENANT,
}]));
const findPerson = (username) => [...people.values()].find((p) => p.username.toLowerCase() === String(username || '').trim().toLowerCase());
const GRAPH = 'https://graph.microsoft.com';
const GRAPH_SCOPES = ['User.Read', 'Calendars.Read', 'Calendars.ReadWrite', 'OnlineMeetings.ReadWrite', 'Mail.Send'];
const WORK_ONLY_SCOPES = new Set(['OnlineMeetings.ReadWrite']); // no Teams meetings for personal accounts
const SCOPE_TEXT = {
  'User.Read': 'Sign you in and read your profile',
  'Calendars.Read': 'Read your calendars',
  'Calendars.ReadWrite': 'Have full access to your calendars',
  'OnlineMeetings.ReadWrite': 'Create and join online meetings on your behalf',
  'Mail.Send': 'Send mail as you',
  openid: 'Sign you in', profile: 'View your basic profile', email: 'View your email address',
  offline_access: 'Maintain access to data you have given it access to',
};
const AUTHORITIES = new Set(['common', 'organizations', 'consumers', ...seed.tenants.map((t) => t.id)]);
const DEVICE_CODE_TTL = Number(args['device-code-ttl']);
const GRAPH_TOKEN_TTL = Number(args['graph-token-ttl']);
// Token requests of the sign-in client by grant type and account (GET /_admin/token-requests): how tests see
// that a revoked account is not asked about again and again.
const tokenRequests = new Map(); // `${grantType} ${username}` -> count
const DEVICE_INTERVAL = Number(args['device-poll-interval']);
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
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

setInterval(() => {
  for (const key of store.keys()) stored(key);
  for (const [code, at] of lastPoll) if (Date.now() - at > 2 * DEVICE_CODE_TTL * 1000) lastPoll.delete(code);
}, 60_000).unref();

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    // An expired device code must still answer expired_token (and its user code "expired" on the page), as
    // Entra's do, rather than vanish into "not found": keep it an hour past its expiry.
    if (this.model === 'DeviceCode' && expiresIn) expiresIn += 3600;
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
    // Entra's refresh tokens stay valid after use (a new one comes with each refresh, the old one still works):
    // no single-use for the car sign-in client's, or two refreshes racing would revoke the whole grant here.
    if (this.model === 'RefreshToken' && payload?.clientId === SIGNIN?.clientId) return;
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
    if (ctx.oidc?.route === 'discovery' && ctx.body && SIGNIN) {
      // Served by the device provider for the car sign-in client (the router sends its requests there).
      ctx.body.device_authorization_endpoint = `${origin}/${tenantId}/oauth2/v2.0/devicecode`;
    }
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
  if (SIGNIN) deviceProvider = buildDeviceProvider();
}

// ---- the device authorization grant for the car sign-in client ------------------------------------------------

let deviceProvider;

const graphScopeName = (scope) => (scope.startsWith(`${GRAPH}/`) ? scope.slice(GRAPH.length + 1) : undefined);
const requestsGraph = (scopeParam) => (scopeParam || '').split(' ').some((s) => graphScopeName(s) !== undefined);

// Who an authority lets sign in: Entra's common, organizations (work and school), consumers (personal), a tenant.
function admits(authority, person) {
  if (authority === 'common') return true;
  if (authority === 'organizations') return !person.personal;
  if (authority === 'consumers') return person.personal;
  return person.tenantId === authority;
}

function refusal(authority, person) {
  if (authority === 'consumers' || authority === PERSONAL_TENANT) {
    return "You can't sign in here with a work or school account. Use a personal Microsoft account instead.";
  }
  if (authority === 'organizations') {
    return "You can't sign in here with a personal account. Use your work or school account instead.";
  }
  const tenant = seed.tenants.find((t) => t.id === authority);
  return `AADSTS50020: User account '${person.username}' from identity provider '${person.personal ? 'live.com' : 'https://sts.windows.net/' + person.tenantId + '/'}' does not exist in tenant '${tenant?.name || authority}' and cannot access the application '${SIGNIN.clientId}'(${SIGNIN.name}) in that tenant.`;
}

// Delegated Graph access token: aud https://graph.microsoft.com, the account's own tenant as issuer and tid, scp in
// Graph's short names, azp the car sign-in client, idtyp user. (Microsoft's real Graph tokens are v1 tokens meant for Graph
// alone; the local Graph sandbox validates these against the JWKS instead.)
function graphAccessToken(token, structured) {
  const base = structured.payload;
  const person = people.get(token.accountId);
  const scp = (base.scope || '').split(' ').map(graphScopeName).filter((s) => s && s !== '.default');
  structured.payload = {
    aud: GRAPH,
    iss: `${origin}/${person.tenantId}/v2.0`,
    iat: base.iat,
    nbf: base.iat,
    exp: base.exp,
    acct: person.personal ? 1 : 0,
    azp: base.client_id,
    azpacr: '0',
    idtyp: 'user',
    name: person.name,
    oid: person.oid,
    preferred_username: person.username,
    scp: scp.join(' '),
    sub: pairwiseSub(person.tenantId, person.oid, base.client_id),
    tid: person.tenantId,
    uti: base.jti,
    ver: '2.0',
  };
  structured.header = { typ: 'JWT' };
}

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const jsonb64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

// oidc-provider signs ID tokens with its own issuer; Entra's /common answers with the account's tenant's. Same key.
function withIssuer(jwt, iss) {
  const [head, body] = jwt.split('.');
  const header = b64json(head);
  const key = signingKeys.find((k) => k.kid === header.kid) || signingKeys[0];
  const signed = `${jsonb64({ ...header, kid: key.kid })}.${jsonb64({ ...b64json(body), iss })}`;
  const signature = crypto.sign('sha256', Buffer.from(signed), crypto.createPrivateKey({ key, format: 'jwk' }));
  return `${signed}.${signature.toString('base64url')}`;
}

// Entra's error body: AADSTS code in the description, error_codes, trace and correlation ids, timestamp.
const ENTRA_ERRORS = {
  authorization_pending: [70016, 'OAuth 2.0 device flow error. Authorization is pending. Continue polling.'],
  slow_down: [70016, 'OAuth 2.0 device flow error. Polling faster than the interval allows; wait at least the interval between requests.'],
  expired_token: [70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired."],
  authorization_declined: [65004, 'User declined to consent to access the app.'],
  bad_verification_code: [70018, "The provided value for the input parameter 'device_code' is not valid."],
  revoked: [50173, 'The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.'],
  invalid_grant: [70000, 'The provided value for the input parameter \'refresh_token\' or \'assertion\' is not valid.'],
  invalid_scope: [70011, 'The provided request must include a \'scope\' input parameter, or the provided value for it is not valid.'],
  invalid_client: [7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."],
  unauthorized_client: [700016, 'Application was not found in the directory.'],
  unsupported_grant_type: [70003, 'The app requested an unsupported grant type.'],
  invalid_request: [900144, 'The request body is not valid.'],
};

function entraError(error, kind = error, detail = '') {
  const [code, text] = ENTRA_ERRORS[kind] || [50000, 'There was an error issuing a token.'];
  const traceId = crypto.randomUUID();
  const correlationId = crypto.randomUUID();
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return {
    error,
    error_description: `AADSTS${code}: ${text}${detail ? ` ${detail}` : ''} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `${origin}/error?code=${code}`,
  };
}

const lastPoll = new Map(); // device_code -> ms of the last poll, for slow_down
const revokedRefreshTokens = new Set(); // refresh token ids revoked by /_admin/revoke-grants: 50173, not 70000

function buildDeviceProvider() {
  const provider = new Provider(`${origin}/common/v2.0`, {
    adapter: SharedMemoryAdapter,
    clients: [{
      client_id: SIGNIN.clientId,
      client_name: SIGNIN.name,
      application_type: 'native', // a public client: oidc-provider then asks consent every time, as Entra's
      token_endpoint_auth_method: 'none', // device flow asks "are you trying to sign in to ...?" every time
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    }],
    jwks: { keys: signingKeys },
    cookies: {
      keys: COOKIE_KEYS,
      names: { session: '_session.device', interaction: '_interaction.device', resume: '_interaction_resume.device' },
    },
    // Mounted at the root: the router hands it /oauth2/v2.0/... for every authority, so the verification page is
    // https://HOST/devicelogin (Entra's is https://microsoft.com/devicelogin, one page for all authorities).
    routes: {
      authorization: '/devicelogin/authorize', // unused: this client has no redirect URI
      token: '/oauth2/v2.0/token',
      jwks: '/discovery/v2.0/keys',
      userinfo: '/oidc/userinfo',
      end_session: '/oauth2/v2.0/logout',
      device_authorization: '/oauth2/v2.0/devicecode',
      code_verification: '/devicelogin',
    },
    extraParams: ['authority'], // set by the router from the path, never by the client
    scopes: OIDC_SCOPES,
    claims: { openid: ['sub'], profile: ['name', 'preferred_username', 'oid', 'tid', 'ver'], email: ['email'] },
    conformIdTokenClaims: false,
    async findAccount(_ctx, id) {
      const person = people.get(id);
      if (!person) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: pairwiseSub(person.tenantId, person.oid, SIGNIN.clientId), name: person.name,
            preferred_username: person.username, email: person.username, oid: person.oid, tid: person.tenantId,
            ver: '2.0',
          };
        },
      };
    },
    interactions: { url: (_ctx, interaction) => `/devicelogin/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    ttl: {
      AccessToken: GRAPH_TOKEN_TTL, IdToken: 3600, DeviceCode: DEVICE_CODE_TTL, RefreshToken: 90 * 86400, Session: 86400,
      Interaction: 600, Grant: 90 * 86400,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('error', 'Something went wrong', `<p role="alert" id="error">${escapeHtml(out.error_description || out.error)}</p>`);
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: false },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '*********', // nine characters, as Entra's user codes
        async userCodeInputSource(ctx, form, _out, err) {
          // No separate "is this your code?" step: Entra goes from the code straight to the sign-in.
          const direct = form.replace('</form>', '<input type="hidden" name="confirm" value="yes"/>\n<button type="submit" id="next">Next</button></form>');
          if (err?.name === 'AbortedError') {
            ctx.body = page('declined', 'Sign-in declined', `<p id="result">You declined to sign in to ${escapeHtml(SIGNIN.name)} on your device. You can close this window.</p>`);
            return;
          }
          let message = '<p>Enter the code displayed on your app or device.</p>';
          if (err?.name === 'ExpiredError') message = '<p role="alert" id="error">The code you entered has expired. Get a new code from the device you\'re trying to sign in to and try again.</p>';
          else if (err?.name === 'AlreadyUsedError') message = '<p role="alert" id="error">That code has already been used. Get a new code from the device you\'re trying to sign in to and try again.</p>';
          else if (err) message = `<p role="alert" id="error">That code didn't work. Check the code and try again.</p>`;
          ctx.body = page('code', 'Enter code', `${message}\n${direct}`);
        },
        async userCodeConfirmSource(ctx, form) {
          ctx.body = page('confirm', 'Continue sign-in', `${form.replace('</form>', '<button type="submit">Continue</button></form>')}`);
        },
        async successSource(ctx) {
          ctx.body = page('done', 'You have signed in', `<p id="result">You have signed in to ${escapeHtml(SIGNIN.name)} on your device. You may now close this window.</p>`);
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          return requestsGraph(ctx.oidc.params?.scope) ? GRAPH : undefined;
        },
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== GRAPH) throw new Provider.errors.InvalidTarget();
          return {
            scope: GRAPH_SCOPES.map((s) => `${GRAPH}/${s}`).join(' '),
            audience: GRAPH,
            accessTokenFormat: 'jwt',
            accessTokenTTL: GRAPH_TOKEN_TTL,
            jwt: { sign: { alg: 'RS256', kid: signingKeys[0].kid } },
          };
        },
      },
    },
    formats: { customizers: { jwt: async (_ctx, token, structured) => graphAccessToken(token, structured) } },
  });
  provider.proxy = false;
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body;
    if (ctx.oidc?.route === 'token') {
      const grantType = ctx.oidc.params?.grant_type || '?';
      const accountId = ctx.oidc.entities?.Account?.accountId || ctx.oidc.entities?.RefreshToken?.accountId;
      const who = (accountId && people.get(accountId)?.username) || '?';
      const key = `${grantType} ${who}`;
      tokenRequests.set(key, (tokenRequests.get(key) || 0) + 1);
    }
    if (ctx.oidc?.route === 'device_authorization' && body?.device_code) {
      ctx.body = {
        user_code: body.user_code,
        device_code: body.device_code,
        verification_uri: body.verification_uri,
        expires_in: body.expires_in,
        interval: DEVICE_INTERVAL,
        message: `To sign in, use a web browser to open the page ${body.verification_uri} and enter the code ${body.user_code} to authenticate.`,
      };
    } else if (ctx.oidc?.route === 'token' && body?.access_token) {
      const account = ctx.oidc.entities.Account;
      const person = people.get(account.accountId);
      body.client_info = jsonb64({ uid: person.oid, utid: person.tenantId });
      if (body.id_token) body.id_token = withIssuer(body.id_token, `${origin}/${person.tenantId}/v2.0`);
      // Entra names Graph's scopes without the resource and lists the OpenID Connect ones granted.
      const oidcScopes = (ctx.oidc.entities.Grant?.getOIDCScope() || '').split(' ').filter(Boolean);
      const graphScopes = (body.scope || '').split(' ').map(graphScopeName).filter(Boolean);
      body.scope = [...graphScopes, ...oidcScopes].join(' ');
      body.ext_expires_in = body.expires_in;
    } else if ((ctx.oidc?.route === 'token' || ctx.oidc?.route === 'device_authorization') && body?.error) {
      let { error } = body;
      let kind = error;
      const grantType = ctx.oidc.params?.grant_type;
      if (error === 'access_denied') error = kind = 'authorization_declined';
      else if (error === 'invalid_client') error = kind = 'unauthorized_client'; // Entra: no such app (700016)
      else if (error === 'invalid_grant' && grantType === DEVICE_GRANT) error = kind = 'bad_verification_code';
      else if (error === 'invalid_grant' && grantType === 'refresh_token' && ctx.req.revokedRefreshToken) kind = 'revoked';
      ctx.body = entraError(error, kind);
    }
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc device server_error', err));
  provider.on('grant.error', (_ctx, err) => console.error(`device grant.error: ${err.error} ${err.error_detail || err.message}`));
  return provider;
}

function page(name, title, content) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><main data-page="${name}"><h1>${escapeHtml(title)}</h1>
${content}
</main></body></html>`;
}

// The device flow's sign-in and consent pages (oidc-provider's interaction API, like the tenants' sign-in page).
async function deviceInteraction(uid, action, req, res) {
  const provider = deviceProvider;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const authority = details.params.authority || 'common';
  const base = `/devicelogin/interaction/${uid}`;
  if (details.prompt.name === 'login') {
    if (req.method === 'GET' && !action) {
      return sendHtml(res, 200, page('signin', 'Sign in', loginForm(`${base}/login`, '')));
    }
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const person = findPerson(form.get('login'));
      let refused;
      if (!person || form.get('password') !== seed.password) refused = 'Your account or password is incorrect.';
      else if (!admits(authority, person)) refused = refusal(authority, person);
      if (refused) {
        // The code stays usable, from this page or another browser, until someone it admits signs in or it expires.
        const code = await provider.DeviceCode.find(details.deviceCode, { ignoreExpiration: true, ignoreSessionBinding: true });
        if (code?.inFlight) {
          delete code.inFlight;
          await code.save();
        }
        return sendHtml(res, 200, page('signin', 'Sign in', loginForm(`${base}/login`, form.get('login'), refused)));
      }
      return provider.interactionFinished(req, res, { login: { accountId: person.oid } }, { mergeWithLastSubmission: false });
    }
  } else if (details.prompt.name === 'consent') {
    const person = people.get(details.session.accountId);
    const requested = (details.params.scope || '').split(' ').filter(Boolean);
    const oidcScopes = requested.filter((s) => OIDC_SCOPES.includes(s));
    const graph = requested.map(graphScopeName).filter((s) => s && GRAPH_SCOPES.includes(s));
    const granted = graph.filter((s) => !(person.personal && WORK_ONLY_SCOPES.has(s)));
    const refused = graph.filter((s) => !granted.includes(s));
    if (req.method === 'GET' && !action) {
      const items = [...granted, ...oidcScopes].map((s) => `<li data-scope="${escapeHtml(s)}">${escapeHtml(SCOPE_TEXT[s] || s)} (${escapeHtml(s)})</li>`).join('\n');
      const body = `<p>Signed in as <span id="account">${escapeHtml(person.username)}</span></p>
<p>Are you trying to sign in to <strong>${escapeHtml(SIGNIN.name)}</strong>? Only continue if you started the sign-in on your own device. It wants to:</p>
<ul id="scopes">${items}</ul>
<form method="post" action="${base}/consent">
<button type="submit" name="decision" value="accept" id="accept">Accept</button>
<button type="submit" name="decision" value="decline" id="decline">Decline</button></form>`;
      return sendHtml(res, 200, page('consent', 'Permissions requested', body));
    }
    if (req.method === 'POST' && action === 'consent') {
      const form = await readForm(req);
      if (form.get('decision') !== 'accept') {
        return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The user declined the sign-in.' }, { mergeWithLastSubmission: false });
      }
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: person.oid, clientId: details.params.client_id });
      if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
      if (granted.length) grant.addResourceScope(GRAPH, granted.map((s) => `${GRAPH}/${s}`).join(' '));
      if (refused.length) grant.rejectResourceScope(GRAPH, refused.map((s) => `${GRAPH}/${s}`).join(' '));
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
  }
  return sendJson(res, 404, { error: 'not_found' });
}

function loginForm(action, loginHint, error) {
  return `${error ? `<p role="alert" id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${action}" autocomplete="off">
<label>Username <input name="login" id="login" value="${escapeHtml(loginHint || '')}" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="submit">Sign in</button></form>`;
}

// Requests of the car sign-in client at /{authority}/oauth2/v2.0/devicecode|token go to the device provider.
async function deviceRequest(authority, inner, url, form, req, res) {
  if (inner === '/oauth2/v2.0/devicecode') {
    // Graph's scopes may be named without the resource, as Entra allows ("Calendars.Read").
    const scopes = (form.get('scope') || '').split(' ').filter(Boolean)
      .map((s) => (OIDC_SCOPES.includes(s) || s.includes('/') || !GRAPH_SCOPES.includes(s) ? s : `${GRAPH}/${s}`));
    form.set('scope', scopes.join(' '));
    form.set('authority', authority);
  } else if (form.get('grant_type') === DEVICE_GRANT) {
    const deviceCode = form.get('device_code') || '';
    const code = stored(`DeviceCode:${deviceCode}`);
    if (!code || code.params?.authority !== authority) {
      return sendJson(res, 400, entraError('bad_verification_code'));
    }
    const now = Date.now();
    const previous = lastPoll.get(deviceCode);
    lastPoll.set(deviceCode, now);
    if (previous !== undefined && now - previous < DEVICE_INTERVAL * 1000) {
      return sendJson(res, 400, entraError('slow_down'));
    }
  } else if (form.get('grant_type') === 'refresh_token') {
    const token = form.get('refresh_token') || '';
    const stored_ = stored(`RefreshToken:${token}`);
    if (revokedRefreshTokens.has(token)) req.revokedRefreshToken = true;
    const person = stored_ && people.get(stored_.accountId);
    if (person && !admits(authority, person)) {
      return sendJson(res, 400, entraError('invalid_grant', 'invalid_grant', `The account belongs to another authority than '${authority}'.`));
    }
    if (form.has('scope')) {
      // offline_access: see the tenants' token route. A personal account asking again for what it can never get
      // gets the token without it, as at sign-in.
      form.set('scope', form.get('scope').split(' ')
        .filter((s) => s && s !== 'offline_access' && !(person?.personal && WORK_ONLY_SCOPES.has(graphScopeName(s))))
        .join(' '));
    }
  }
  req.body = form.toString();
  req.originalUrl = `${inner}${url.search}`;
  req.url = `${inner}${url.search}`;
  return deviceProvider.callback()(req, res);
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
    const user = apiUsers.find((u) => u.username.toLowerCase() === username && u.tenantId === tenant.id);
    if (!user || form.get('password') !== seed.password) {
      return sendHtml(res, 200, loginPage(tenant, uid, username, 'Your account or password is incorrect.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.oid } }, { mergeWithLastSubmission: false });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

// ---- the Entra "common" endpoint and admin routes ---------------------------------------------------------------

// Entra's documents for common, organizations and consumers: the first two carry the {tenantid} issuer template,
// consumers the Microsoft accounts tenant's own issuer.
function commonConfiguration(authority = 'common') {
  const base = `${origin}/${authority}`;
  return {
    token_endpoint: `${base}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
    jwks_uri: `${base}/discovery/v2.0/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code'],
    scopes_supported: OIDC_SCOPES,
    issuer: authority === 'consumers' ? `${origin}/${PERSONAL_TENANT}/v2.0` : `${origin}/{tenantid}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${base}/oidc/userinfo`,
    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'name', 'preferred_username', 'oid', 'tid', 'ver', 'email'],
    code_challenge_methods_supported: ['S256'],
    tenant_region_scope: null,
    cloud_instance_name: 'local',
    ...(SIGNIN ? { device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode` } : {}),
  };
}

async function admin(path, req, res) {
  if (req.headers.authorization !== `Bearer ${ADMIN_TOKEN}` || !ADMIN_TOKEN) {
    return sendJson(res, 403, { error: 'forbidden' });
  }
  if (req.method === 'GET' && path === '/_admin/token-requests') {
    return sendJson(res, 200, Object.fromEntries(tokenRequests));
  }
  if (req.method !== 'POST') return sendJson(res, 403, { error: 'forbidden' });
  if (path === '/_admin/keys/rotate') {
    signingKeys = [newSigningKey(), ...signingKeys];
  } else if (path === '/_admin/keys/retire') {
    signingKeys = signingKeys.slice(0, 1);
  } else if (path === '/_admin/revoke-grants') {
    // What a password reset does in Entra: every grant and refresh token of the account stops working at once.
    const { username } = JSON.parse((await readBody(req)) || '{}');
    const person = findPerson(username);
    if (!person) return sendJson(res, 404, { error: 'not_found', error_description: `no seeded account ${username}` });
    let grants = 0;
    for (const key of [...store.keys()]) {
      const value = stored(key);
      if (!value || value.accountId !== person.oid) continue;
      if (key.startsWith('Grant:')) {
        const grantId = key.slice('Grant:'.length);
        for (const member of stored(`grant:${grantId}`) || []) {
          if (member.startsWith('RefreshToken:')) revokedRefreshTokens.add(member.slice('RefreshToken:'.length));
        }
        for (const member of stored(`grant:${grantId}`) || []) store.delete(member);
        store.delete(`grant:${grantId}`);
        store.delete(key);
        grants += 1;
      } else if (key.startsWith('Session:') || key.startsWith('RefreshToken:')) {
        if (key.startsWith('RefreshToken:')) revokedRefreshTokens.add(key.slice('RefreshToken:'.length));
        store.delete(key);
      }
    }
    return sendJson(res, 200, { username: person.username, revokedGrants: grants });
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
  if (deviceProvider && (path === '/devicelogin' || path.startsWith('/devicelogin/'))) {
    const [, , sub, uid, action] = path.split('/');
    if (sub === 'interaction') return deviceInteraction(uid, action, req, res);
    req.originalUrl = req.url; // the device provider is mounted at the root
    return deviceProvider.callback()(req, res);
  }
  const [, tenantId, ...rest] = path.split('/');
  const tail = path.slice(tenantId.length + 1);
  if (['common', 'organizations', 'consumers'].includes(tenantId)) {
    if (tail === '/v2.0/.well-known/openid-configuration') return sendJson(res, 200, commonConfiguration(tenantId));
    if (tail === '/discovery/v2.0/keys') return sendJson(res, 200, publicJwks());
  }
  if (deviceProvider && AUTHORITIES.has(tenantId) && req.method === 'POST'
      && (tail === '/oauth2/v2.0/devicecode' || tail === '/oauth2/v2.0/token')) {
    const form = await readForm(req);
    const tenantToken = tail === '/oauth2/v2.0/token' && providers.has(tenantId) && form.get('client_id') !== SIGNIN.clientId;
    if (!tenantToken) return deviceRequest(tenantId, tail, url, form, req, res);
    req.preReadForm = form;
  }
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
    const form = req.preReadForm || await readForm(req);
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
