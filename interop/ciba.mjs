// Interop check of Countersign with clients this project did not write:
// panva's openid-client (discovery, CIBA poll and ping, ID token validation)
// and jose (access token verification against jwks_uri).
//
// Usage: node ciba.mjs MODE
//
//   poll-approve  poll until a token arrives, then validate both tokens
//   poll-deny     poll until the request is denied; expect access_denied
//   ping          listen for the ping callback (CIBA §10.2) on the listening
//                 socket inherited as file descriptor 3, then redeem the
//                 auth_req_id once at the token endpoint and validate
//
// Input (environment, so that the secret never shows in a process list):
//   CS_ISSUER, CS_CLIENT_ID, CS_CLIENT_SECRET, CS_AUDIENCE (the access
//   token's expected aud), CS_DETAILS (authorization_details JSON),
//   CS_LOGIN_HINT; optional CS_BINDING_MESSAGE, CS_ID_TOKEN_ALG (default
//   ES256), CS_NOTIFY_PATH (ping; default /cb), CS_TIMEOUT_MS (default 25000).
//
// Output: one JSON line on stdout once the request exists
//   {"event":"started","auth_req_id":…,"approval_url":…,"expires_in":…,"interval":…}
// so that the driver can decide it, then one final line
//   {"event":"done","mode":…,…results}.
// Any failure exits 1 with the error on stderr.

import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { inspect, isDeepStrictEqual } from 'node:util'

import * as jose from 'jose'
import * as client from 'openid-client'

const GRANT_CIBA = 'urn:openid:params:grant-type:ciba'

function env(name, fallback) {
  const v = process.env[name]
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback
    throw new Error(`environment variable ${name} is required`)
  }
  return v
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function check(cond, message, detail) {
  if (!cond) {
    const err = new Error(`check failed: ${message}`)
    err.detail = detail
    throw err
  }
}

const mode = process.argv[2]
if (!['poll-approve', 'poll-deny', 'ping'].includes(mode)) {
  process.stderr.write('usage: node ciba.mjs poll-approve|poll-deny|ping\n')
  process.exit(2)
}

const issuer = env('CS_ISSUER')
const clientId = env('CS_CLIENT_ID')
const clientSecret = env('CS_CLIENT_SECRET')
const audience = env('CS_AUDIENCE')
const detailsJSON = env('CS_DETAILS')
const details = JSON.parse(detailsJSON)
const loginHint = env('CS_LOGIN_HINT')
const bindingMessage = env('CS_BINDING_MESSAGE', '')
const idTokenAlg = env('CS_ID_TOKEN_ALG', 'ES256')
const notifyPath = env('CS_NOTIFY_PATH', '/cb')
const timeoutMs = Number(env('CS_TIMEOUT_MS', '25000'))

// Every token endpoint answer, in order, so the driver can check that
// polling honoured interval, authorization_pending and slow_down.
const tokenCalls = []
const started = Date.now()

async function main() {
  // Discovery (OpenID Connect Discovery 1.0) with the client's registered
  // metadata: the ID token must be signed with exactly idTokenAlg.
  const config = await client.discovery(
    new URL(issuer),
    clientId,
    { client_secret: clientSecret, id_token_signed_response_alg: idTokenAlg },
    client.ClientSecretBasic(clientSecret),
    { execute: [client.allowInsecureRequests] }, // the test server is plain http on loopback
  )
  const md = config.serverMetadata()
  check(md.issuer === issuer, 'discovered issuer', md.issuer)
  check(typeof md.backchannel_authentication_endpoint === 'string', 'backchannel_authentication_endpoint advertised')
  check(md.grant_types_supported?.includes(GRANT_CIBA), 'CIBA grant advertised', md.grant_types_supported)
  const deliveryMode = mode === 'ping' ? 'ping' : 'poll'
  check(md.backchannel_token_delivery_modes_supported?.includes(deliveryMode),
    `delivery mode ${deliveryMode} advertised`, md.backchannel_token_delivery_modes_supported)
  for (const d of details) {
    check(md.authorization_details_types_supported?.includes(d.type),
      `authorization_details type ${d.type} advertised`, md.authorization_details_types_supported)
  }
  // The ID token's signature too, against jwks_uri; openid-client checks only
  // its claims by default (OpenID Connect Core §3.1.3.7 allows relying on TLS).
  client.enableNonRepudiationChecks(config)
  config[client.customFetch] = async (url, options) => {
    const res = await fetch(url, options)
    if (url.toString() === md.token_endpoint) {
      const body = await res.clone().json().catch(() => ({}))
      tokenCalls.push({ at_ms: Date.now() - started, status: res.status, error: body.error ?? null,
        retry_after: res.headers.get('retry-after') })
    }
    return res
  }

  const params = { scope: 'openid', login_hint: loginHint, authorization_details: JSON.stringify(details) }
  if (bindingMessage) params.binding_message = bindingMessage

  if (mode === 'ping') {
    return ping(config, params)
  }
  const response = await client.initiateBackchannelAuthentication(config, params)
  emit({ event: 'started', auth_req_id: response.auth_req_id, approval_url: response.approval_url,
    expires_in: response.expires_in, interval: response.interval })

  const signal = AbortSignal.timeout(timeoutMs)
  if (mode === 'poll-deny') {
    try {
      await client.pollBackchannelAuthenticationGrant(config, response, undefined, { signal })
    } catch (err) {
      check(err instanceof client.ResponseBodyError, 'a ResponseBodyError from the token endpoint', String(err))
      check(err.error === 'access_denied', 'error is access_denied', err.error)
      check(err.status === 400, 'access_denied at the token endpoint is HTTP 400 (CIBA §11, RFC 6749 §5.2)', err.status)
      return { event: 'done', mode, error: err.error, status: err.status, token_calls: tokenCalls }
    }
    throw new Error('check failed: a denied request yielded tokens')
  }
  const tokens = await client.pollBackchannelAuthenticationGrant(config, response, undefined, { signal })
  return { event: 'done', mode, ...(await validate(md, response.auth_req_id, tokens)), token_calls: tokenCalls }
}

// ping runs the CIBA ping flow (CIBA §10.2): the server POSTs
// {"auth_req_id"} with the client_notification_token as a Bearer token to
// our endpoint; then, and not before, we call the token endpoint once.
async function ping(config, params) {
  const notificationToken = randomBytes(32).toString('base64url')
  let resolveNotified, rejectNotified
  const notified = new Promise((res, rej) => { resolveNotified = res; rejectNotified = rej })
  let authReqId
  const pings = []
  const badPings = [] // also those after the first good one

  const server = createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      pings.push({ at_ms: Date.now() - started, method: req.method, path: req.url })
      try {
        check(req.method === 'POST', 'ping is a POST', req.method)
        check(req.url === notifyPath, 'ping goes to the registered path', req.url)
        check(req.headers.authorization === `Bearer ${notificationToken}`,
          'ping carries the client_notification_token as a Bearer token (CIBA §10.2)', req.headers.authorization)
        check((req.headers['content-type'] ?? '').split(';')[0].trim() === 'application/json',
          'ping is application/json', req.headers['content-type'])
        const body = JSON.parse(raw)
        check(isDeepStrictEqual(body, { auth_req_id: authReqId }), 'ping body is exactly {"auth_req_id"}', body)
      } catch (err) {
        res.writeHead(400).end()
        badPings.push(err)
        rejectNotified(err)
        return
      }
      // CIBA §10.2: the client acknowledges with 2xx; at-least-once delivery
      // may repeat it, and a repeat must not trigger a second redemption.
      res.writeHead(204).end()
      resolveNotified()
    })
  })
  await new Promise((res, rej) => {
    server.once('error', rej)
    server.listen({ fd: 3 }, res)
  })
  try {
    const response = await client.initiateBackchannelAuthentication(config,
      { ...params, client_notification_token: notificationToken })
    authReqId = response.auth_req_id
    emit({ event: 'started', auth_req_id: response.auth_req_id, approval_url: response.approval_url,
      expires_in: response.expires_in, interval: response.interval })

    let timer
    const timeout = new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`no ping within ${timeoutMs} ms`)), timeoutMs)
    })
    try {
      await Promise.race([notified, timeout])
    } finally {
      clearTimeout(timer)
    }
    check(tokenCalls.length === 0, 'no token request before the ping', tokenCalls)
    const tokens = await client.genericGrantRequest(config, GRANT_CIBA, { auth_req_id: response.auth_req_id })
    const md = config.serverMetadata()
    const result = await validate(md, response.auth_req_id, tokens)
    if (badPings.length) throw badPings[0]
    return { event: 'done', mode, ...result, token_calls: tokenCalls, pings }
  } finally {
    server.close()
  }
}

// validate checks a successful token response beyond what openid-client
// already did (ID token iss, aud, exp, iat, sub, alg and signature).
async function validate(md, authReqId, tokens) {
  check(tokens.token_type === 'bearer', 'token_type Bearer', tokens.token_type)
  check(Number.isInteger(tokens.expires_in) && tokens.expires_in > 0, 'expires_in is a positive integer', tokens.expires_in)
  check(tokens.refresh_token === undefined, 'no refresh token for a single transaction')

  const id = tokens.claims()
  check(id !== undefined, 'an ID token (scope openid)')
  check(typeof id.auth_time === 'number', 'ID token auth_time', id.auth_time)
  check(id['urn:openid:params:jwt:claim:auth_req_id'] === authReqId,
    'ID token urn:openid:params:jwt:claim:auth_req_id is our auth_req_id (CIBA §10.3.1)', id)
  // OpenID Connect Core §3.1.3.6: at_hash is the left half of the hash of
  // the access token, with the hash of the ID token's alg.
  const idAlg = jose.decodeProtectedHeader(tokens.id_token).alg
  const hashName = { ES256: 'sha256', RS256: 'sha256', ES384: 'sha384', ES512: 'sha512' }[idAlg]
  check(hashName !== undefined, 'a known ID token alg', idAlg)
  const digest = createHash(hashName).update(tokens.access_token).digest()
  check(id.at_hash === digest.subarray(0, digest.length / 2).toString('base64url'), 'ID token at_hash', id.at_hash)

  // RFC 9068 access token, verified by jose against the published keys.
  const jwks = jose.createRemoteJWKSet(new URL(md.jwks_uri))
  const { payload: at, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer: md.issuer,
    audience,
    typ: 'at+jwt',
    algorithms: ['ES256'],
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
  })
  check(typeof protectedHeader.kid === 'string' && protectedHeader.kid !== '', 'access token kid', protectedHeader)
  check(at.sub === id.sub, 'access token sub is the ID token sub', [at.sub, id.sub])
  check(at.client_id === clientId, 'access token client_id', at.client_id)
  check(at.act?.sub === clientId, 'access token act.sub is the client (RFC 8693 §4.1)', at.act)
  check(at.exp <= at.iat + 300, 'access token lives at most 5 minutes', [at.iat, at.exp])

  // RFC 9396 §7: the token response carries the granted details; Countersign
  // grants exactly what was asked, and puts them in the token too.
  check(isDeepStrictEqual(tokens.authorization_details, details),
    'token response authorization_details equal the requested ones', tokens.authorization_details)
  check(isDeepStrictEqual(at.authorization_details, details),
    'access token authorization_details equal the requested ones', at.authorization_details)
  check(typeof at.authorization_details_hash === 'string' && at.authorization_details_hash !== '',
    'access token authorization_details_hash', at.authorization_details_hash)

  return {
    id_token_alg: idAlg,
    id_token_claims: id,
    access_token_header: protectedHeader,
    access_token_claims: at,
    authorization_details: tokens.authorization_details,
  }
}

main().then(
  (result) => {
    emit(result)
    process.exit(0)
  },
  (err) => {
    // inspect shows the code, cause and detail (what failed a check) too.
    process.stderr.write(inspect(err, { depth: 5 }) + '\n')
    if (tokenCalls.length) process.stderr.write(`token endpoint calls: ${JSON.stringify(tokenCalls)}\n`)
    process.exit(1)
  },
)
