package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// binEnv names the environment variable that points the suite at a prebuilt
// sluice binary instead of building ./cmd/sluice.
const binEnv = "SLUICE_BIN"

var (
	// sluicePath is the sluice binary under test; empty when buildErr is set.
	sluicePath string
	// buildErr is why no binary is available. Tests that need the binary
	// fail with it; it is not fatal for TestMain so that every test reports.
	buildErr error
)

func TestMain(m *testing.M) {
	// The test binary doubles as a small client run inside network
	// namespaces (see helper_test.go); it never builds sluice then.
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	if err := raiseNofile(); err != nil {
		fmt.Fprintln(os.Stderr, "test: raise RLIMIT_NOFILE:", err)
	}
	tmp, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		os.Exit(2)
	}
	sluicePath, buildErr = locateSluice(tmp)
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// sluiceBin returns the path of the sluice binary, failing t when it could
// not be built.
func sluiceBin(t testing.TB) string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("no sluice binary: %v", buildErr)
	}
	return sluicePath
}

// locateSluice returns $SLUICE_BIN when set, otherwise builds ./cmd/sluice
// of the enclosing module into dir.
func locateSluice(dir string) (string, error) {
	if p := os.Getenv(binEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", binEnv, p, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("%s: %w", binEnv, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%q is not an executable file", binEnv, abs)
		}
		return abs, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "sluice")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/sluice")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sluice in %s: %v\n%s", root, err, b)
	}
	return out, nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// raiseNofile raises the soft RLIMIT_NOFILE of the test process to its hard
// limit. The os package already does this at start-up since Go 1.19; this
// only makes sure, because TestManyIdleConnections holds 8,000 sockets.
func raiseNofile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
