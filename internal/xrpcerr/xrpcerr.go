package xrpcerr

import (
	"encoding/json"
	"net/http"
)

// body is the XRPC error body; both fields are always written.
type body struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// Write answers w with status (an HTTP status, 4xx or 5xx) and the XRPC
// error body {"error": name, "message": msg}. name is the error's type, a
// short ASCII name without spaces (e.g. "InvalidRequest"); msg is a
// human-readable sentence and must hold no secret. It must be called
// before anything else was written to w; an error writing the body (the
// client went away) is dropped, since nothing more can be said to it.
func Write(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body{Error: name, Message: msg})
}
