package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startWeb runs signals web with args on the bundle's schema, waits for it
// to print its address and returns it; the command is stopped with SIGTERM
// when the test ends, and must then exit with code 0.
func startWeb(t *testing.T, b *testBundle, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	cmd := exec.CommandContext(ctx, binary, append([]string{"web", "--addr", "127.0.0.1:0", "--schema", b.schema}, args...)...)
	cmd.Env = append(append(baseEnv(), serverEnv()...), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		defer cancel()
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		select {
		case err := <-exited:
			require.NoError(t, err, "SIGTERM ends signals web with exit code 0; stderr:\n%s", &stderr)
		case <-time.After(eventually):
			t.Errorf("signals web did not stop within %v of SIGTERM; stderr:\n%s", eventually, &stderr)
		}
		require.Contains(t, stderr.String(), "signals web stopped")
	})
	var line string
	select {
	case line = <-lines:
	case <-time.After(eventually):
		t.Fatalf("signals web printed no address within %v; stderr:\n%s", eventually, &stderr)
	}
	m := regexp.MustCompile(`is at (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(line)
	require.NotNil(t, m, "first line: %q; stderr:\n%s", line, &stderr)
	return m[1]
}

func getPage(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestWeb(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("serves the dashboard on loopback", func(t *testing.T) {
		t.Parallel()
		base := startWeb(t, b, nil)
		req, err := http.NewRequest(http.MethodGet, base, nil)
		require.NoError(t, err)
		status, page := getPage(t, req)
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, "<h1>Overview")
		req, err = http.NewRequest(http.MethodGet, base+"dead", nil)
		require.NoError(t, err)
		status, page = getPage(t, req)
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, "No dead letter in the ledger.")
	})

	t.Run("asks for the credentials in the environment", func(t *testing.T) {
		t.Parallel()
		base := startWeb(t, b, []string{"SIGNALS_WEB_USER=ops", "SIGNALS_WEB_PASSWORD=s3cret"}, "--read-only")
		req, err := http.NewRequest(http.MethodGet, base+"dead", nil)
		require.NoError(t, err)
		status, _ := getPage(t, req)
		require.Equal(t, http.StatusUnauthorized, status)
		req.SetBasicAuth("ops", "wrong")
		status, _ = getPage(t, req)
		require.Equal(t, http.StatusUnauthorized, status)
		req.SetBasicAuth("ops", "s3cret")
		status, page := getPage(t, req)
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, "read-only")
	})

	t.Run("refuses another address without credentials", func(t *testing.T) {
		t.Parallel()
		r := b.signals(t, "web", "--addr", "0.0.0.0:0")
		requireCode(t, exitUsage, r)
		require.Contains(t, r.stderr, "not a loopback address: set SIGNALS_WEB_USER and SIGNALS_WEB_PASSWORD")
		r = runSignals(t, append(serverEnv(), "SIGNALS_WEB_USER=ops"), "web", "--schema", b.schema)
		requireCode(t, exitUsage, r)
		require.Contains(t, r.stderr, "set both SIGNALS_WEB_USER and SIGNALS_WEB_PASSWORD")
	})

	t.Run("refuses an unmigrated schema", func(t *testing.T) {
		t.Parallel()
		r := runSignals(t, serverEnv(), "web", "--addr", "127.0.0.1:0", "--schema", b.schema+"_none")
		requireCode(t, exitCannotCheck, r)
		require.Contains(t, r.stderr, "run signals migrate --schema "+b.schema+"_none")
	})
}
