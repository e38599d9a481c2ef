// A real OpenID Provider (the `oidc-provider` npm package) for stepguard's integration tests,
// started by tests/it/support/idp.rs. It signs the test user in without any UI: its interaction
// route completes login and consent at once, as whoever the test asked for.
//
// Usage: node tests/idp/provider.mjs <config.json>
//
// Config (written by the harness; only `clients` is required):
//   {
//     "port": 0,                          // 0 or absent: listen on a free port; the issuer follows it
//     "issuer": "http://127.0.0.1:N",     // default http://127.0.0.1:<port>
//     "clients": [{                       // oidc-provider client metadata (RFC 7591 names), e.g.
//       "client_id": "stepguard", "client_secret": "s3cret",
//       "redirect_uris": ["http://127.0.0.1:9/cb"],
//       "token_endpoint_auth_method": "client_secret_basic"   // or "client_secret_post"
//     }],
//     "acr_values": ["aal1", "aal2", "aal3"],
//     "rar_types": ["payment_initiation", "stepguard_transaction"],
//     "default_login": { "sub": "alice", "acr": "aal2", "amr": ["pwd", "otp"],
//                        "auth_time_offset_secs": 0 },
//     "exit_on_stdin_eof": true           // die with the harness even if it never sends SIGTERM
//   }
//
// Test-control endpoints (JSON):
//   POST /__test/next-login {sub?, acr?, amr?, auth_time_offset_secs?}: who the NEXT login
//        interaction signs in as (missing fields: default_login); one-shot. 204.
//   GET  /__test/last-authorization: the parameters of the latest request to the authorization
//        endpoint as the client sent them (a PAR request_uri resolved to the pushed ones,
//        `pushed: true`), authorization_details parsed; `null` before any.
//   GET  /__test/health: 200 {"ok":true}.
// stdout: exactly one `READY <issuer>` line once listening. Errors go to stderr.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs <config.json>');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const defaultLogin = {
  sub: 'alice', acr: 'aal2', amr: ['pwd', 'otp'], auth_time_offset_secs: 0, ...config.default_login,
};
const rarTypes = config.rar_types ?? ['payment_initiation', 'stepguard_transaction'];
// Resource server that RAR requests are bound to (oidc-provider requires a resource indicator
// whenever authorization_details are used).
const RAR_RESOURCE = 'urn:stepguard:test-api';

let nextLogin = null; // set by POST /__test/next-login, consumed by the next login interaction
let lastAuthorization = null;
const pushed = new Map(); // PAR request_uri -> the parameters pushed
let provider = null; // built once the port (and so the issuer) is known

// Fresh signing keys per run; the first key of an algorithm is the one oidc-provider signs with.
function signingKey(alg, options) {
  const { privateKey } = generateKeyPairSync(options.type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg.toLowerCase()}-${randomUUID()}`, alg, use: 'sig' };
}

// Step-up, as real IdPs do it: acr_values the current session does not satisfy start a new
// login. oidc-provider treats acr_values as voluntary and would reuse a weaker session.
const acrUnsatisfied = new interactionPolicy.Check('acr_values_unsatisfied', 'requested acr not satisfied', (ctx) => {
  const wanted = ctx.oidc.params.acr_values?.split(' ').filter(Boolean) ?? [];
  return ctx.oidc.session.accountId !== undefined && wanted.length > 0
    && !wanted.includes(ctx.oidc.session.acr) && !ctx.oidc.result?.login;
});

function buildProvider(issuer) {
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(acrUnsatisfied);

  const p = new Provider(issuer, {
    clients: (config.clients ?? []).map((c) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      authorization_details_types: rarTypes, // oidc-provider rejects RAR types a client lacks
      ...c,
    })),
    jwks: {
      keys: [
        signingKey('RS256', { type: 'rsa', modulusLength: 2048 }),
        signingKey('ES256', { type: 'ec', namedCurve: 'P-256' }),
      ],
    },
    // Cookie signing keys; without them oidc-provider's cookies are unsigned.
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    acrValues: config.acr_values ?? ['aal1', 'aal2', 'aal3'],
    // Mapping acr/amr/auth_time to the openid scope puts them into every ID token, not only
    // when acr_values/max_age ask (oidc-provider's default). The values come from the login.
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, name: sub, email: `${sub}@example.test`, email_verified: true }),
    }),
    pkce: { required: () => true }, // PKCE (S256, the only method 9.x supports) for every client
    interactions: { policy, url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false }, // our /interaction route replaces the dev login UI
      pushedAuthorizationRequests: { enabled: true }, // PAR (RFC 9126), optional per request
      // RFC 9396: every configured type is accepted as is, and what was asked is what is granted.
      richAuthorizationRequests: {
        enabled: true,
        types: Object.fromEntries(rarTypes.map((type) => [type, { validate: async () => {} }])),
        authorizationDetailsForGrantSource: async (ctx) => requestedDetails(ctx),
        authorizationDetailsForAccessToken: async (_ctx, _token, source) => source?.rar,
        authorizationDetailsForIntrospection: async (_ctx, token) => token.rar,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, _client, oneOf) => oneOf
          ?? (ctx.oidc.params?.authorization_details ? RAR_RESOURCE : undefined),
        getResourceServerInfo: async () => ({ scope: '', accessTokenFormat: 'opaque' }),
        useGrantedResource: async () => true,
      },
      // RFC 9207 `iss` in authorization responses is always on in oidc-provider 9.x.
    },
    // Errors as JSON instead of an HTML page, so a failing test prints something readable.
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // Remember what each authorization request asked for, as sent: oidc-provider rewrites some
  // parameters while processing (max_age=0 becomes prompt=login), so the raw ones are kept,
  // and a PAR request_uri is resolved to the parameters pushed for it.
  p.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'pushed_authorization_request' && ctx.body?.request_uri) {
      pushed.set(ctx.body.request_uri, withoutSecrets(ctx.oidc.body));
    } else if (route === 'authorization') {
      const sent = { ...ctx.query, ...(ctx.method === 'POST' ? ctx.oidc.body : undefined) };
      const par = sent.request_uri ? pushed.get(sent.request_uri) : undefined;
      const params = { ...par, ...withoutSecrets(sent), pushed: par !== undefined };
      if (typeof params.authorization_details === 'string') {
        try { params.authorization_details = JSON.parse(params.authorization_details); } catch { /* keep */ }
      }
      lastAuthorization = params;
    }
  });
  p.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));
  return p;
}

function withoutSecrets(params) {
  const { client_secret: _s, client_assertion: _a, ...rest } = params ?? {};
  return rest;
}

function requestedDetails(ctx) {
  const details = ctx.oidc.params.authorization_details;
  return typeof details === 'string' ? JSON.parse(details) : details;
}

// The interaction route: login completes at once as `nextLogin` (or the default), consent
// grants whatever is missing. interactionFinished answers 303 back to the provider.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;

  if (prompt.name === 'login') {
    const login = { ...defaultLogin, ...nextLogin };
    nextLogin = null;
    if (session?.accountId && session.accountId !== login.sub) {
      // Switching user: oidc-provider would otherwise ask to log the old user out first.
      // Drop the old session, as that logout would.
      const old = await provider.Session.findByUid(session.uid);
      if (old) await old.destroy();
      details.session = undefined;
      await details.persist();
    }
    const ts = Math.floor(Date.now() / 1000) + Number(login.auth_time_offset_secs ?? 0);
    await provider.interactionFinished(req, res, {
      login: { accountId: login.sub, acr: login.acr, amr: login.amr, ts, remember: true },
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes, rar } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    for (const detail of rar ?? []) grant.addRar(detail);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, {
      consent: details.grantId ? {} : { grantId },
    }, { mergeWithLastSubmission: true });
    return;
  }

  throw new Error(`unexpected prompt ${prompt.name}`);
}

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body ? JSON.parse(body) : {};
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function testControl(req, res, path) {
  if (req.method === 'GET' && path === '/__test/health') return sendJson(res, 200, { ok: true });
  if (req.method === 'GET' && path === '/__test/last-authorization') return sendJson(res, 200, lastAuthorization);
  if (req.method === 'POST' && path === '/__test/next-login') {
    const { sub, acr, amr, auth_time_offset_secs: offset } = await readJson(req);
    nextLogin = Object.fromEntries(Object.entries({
      sub, acr, amr, auth_time_offset_secs: offset,
    }).filter(([, v]) => v !== undefined && v !== null));
    res.writeHead(204).end();
    return undefined;
  }
  return sendJson(res, 404, { error: 'not_found', path });
}

// Plain Node routing in front of the provider: test-control, interactions, then oidc-provider.
let callback = null;
const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  try {
    if (path.startsWith('/__test/')) return await testControl(req, res, path);
    if (!provider) return sendJson(res, 503, { error: 'starting' });
    if (path.startsWith('/interaction/')) return await interaction(req, res);
    return callback(req, res);
  } catch (err) {
    console.error(`${req.method} ${req.url}:`, err);
    if (!res.headersSent) sendJson(res, err.statusCode ?? 500, { error: err.error ?? 'server_error', error_description: err.error_description ?? String(err.message) });
    else res.end();
    return undefined;
  }
});

server.on('error', (err) => {
  console.error('listen failed:', err);
  process.exit(1);
});

server.listen(config.port ?? 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = config.issuer ?? `http://127.0.0.1:${port}`;
  try {
    provider = buildProvider(issuer);
  } catch (err) {
    console.error('invalid provider configuration:', err);
    process.exit(1);
  }
  callback = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (config.exit_on_stdin_eof) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
