package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestServePprof(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := servePprof(ctx, "127.0.0.1:0")
	require.NoError(t, err)
	res, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, string(body), "servePprof", "a goroutine profile of this process")

	_, err = servePprof(ctx, addr)
	require.ErrorContains(t, err, "pprof listen", "an address in use is an error that says what failed")

	cancel()
	require.Eventually(t, func() bool { // the server closes once ctx ends
		r, err := http.Get("http://" + addr + "/debug/pprof/")
		if err == nil {
			_ = r.Body.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
}
