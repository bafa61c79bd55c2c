package xrpcerr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/xrpcerr"
)

func TestWrite_StatusTypeAndBody(t *testing.T) {
	rec := httptest.NewRecorder()
	xrpcerr.Write(rec, http.StatusBadRequest, "InvalidRequest", `cursor must be a non-negative integer, got "x"`)

	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var got map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.Equal(t, map[string]any{
		"error":   "InvalidRequest",
		"message": `cursor must be a non-negative integer, got "x"`,
	}, got)
}
