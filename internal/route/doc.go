// Package route keeps every authenticated request of one account on one
// replica. It answers Caddy's forward_auth sub-request
// (modules/caddyhttp/reverseproxy/forwardauth in Caddy: a GET to Path
// carrying the client's original headers, with X-Forwarded-Method and
// X-Forwarded-Uri) with 200 and, when the client's Authorization header
// holds a JWT naming an account, the account's DID in the Header response
// header. Caddy copies that header onto the client's request
// (copy_headers) and hashes it over the healthy replicas
// (lb_policy header, rendezvous hashing), so two sessions of one account
// (phone and web, or a token before and after refresh) write through the
// same Cocoon process, whose per-process repo lock then serialises them.
//
// The token is decoded for routing only: its signature, expiry and
// audience are not checked and it grants nothing; the replica
// authenticates the request as before. A forged token can only choose
// which replica rejects it. Tokens never reach logs or metrics labels.
//
// Accepted shapes (Cocoon's server/session.go and
// server/handle_oauth_token.go; the atproto service-auth spec):
//
//	Authorization: Bearer <jwt>   session access/refresh token: sub = DID
//	Authorization: DPoP <jwt>     OAuth access token: sub = DID
//	Authorization: Bearer <jwt>   service auth (lxm claim, no sub): iss = DID
//
// Anything else (no header, Basic admin auth, an opaque or malformed
// token, a sub that is not a DID) gets 200 without the header: the request
// proceeds unrouted and Caddy's fallback policy picks a replica.
//
// It does not proxy, authenticate, or know the replicas: Caddy does.
package route
