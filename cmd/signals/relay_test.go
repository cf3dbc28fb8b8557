package main

import (
	"bytes"
	"context"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := b.ledger(t)

	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "relay", "--schema", b.schema)
	cmd.Env = append(baseEnv(), serverEnv()...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	send(t, b, l.signups, signedUp{UserID: 1})
	require.Eventually(t, func() bool {
		return b.stats(t, "user.signed_up", "send-welcome").InFlight == 1
	}, eventually, 10*time.Millisecond, "the relay enqueues the row; stderr:\n%s", &stderr)
	require.Zero(t, b.stats(t, "user.signed_up", "send-welcome").Pending)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "SIGTERM ends the relay with exit code 0; stderr:\n%s", &stderr)
	case <-time.After(eventually):
		t.Fatalf("the relay did not stop within %v of SIGTERM; stderr:\n%s", eventually, &stderr)
	}
	require.Contains(t, stderr.String(), "signals relay started")
	require.Contains(t, stderr.String(), "signals relay stopped")
}

func TestRelayRefusesAnUnmigratedSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := runSignals(t, serverEnv(), "relay", "--schema", b.schema+"_none")
	requireCode(t, exitCannotCheck, r)
	require.Contains(t, r.stderr, "run signals migrate --schema "+b.schema+"_none")
}
