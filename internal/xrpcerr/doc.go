// Package xrpcerr writes an atproto XRPC error response: an HTTP status
// and a JSON body {"error": name, "message": msg} with Content-Type
// application/json, as the XRPC spec's "Error Responses" section
// describes (https://atproto.com/specs/xrpc). Every pdsmux HTTP handler
// that answers an XRPC path with an error uses it, and so does the fake
// replica, so a client sees one shape from all of them.
//
// It does not choose names or statuses: callers do, using the spec's or
// the peer's names (InvalidRequest, RepoNotFound, ...) where one exists.
package xrpcerr
