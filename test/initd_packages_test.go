package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readRepoFile returns the text of a file of the repository.
func readRepoFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPackageVersionsAgree checks that the VERSION file, the OpenWrt and
// Buildroot package Makefiles agree, and that the -X flag they pass sets
// what `sluice version` prints.
func TestPackageVersionsAgree(t *testing.T) {
	version := strings.TrimSpace(readRepoFile(t, "VERSION"))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(version) {
		t.Fatalf("VERSION %q is not MAJOR.MINOR.PATCH", version)
	}
	checks := []struct{ file, pattern string }{
		{"openwrt/Makefile", `(?m)^PKG_VERSION:=(.*)$`},
		{"buildroot/package/sluice/sluice.mk", `(?m)^SLUICE_VERSION = (.*)$`},
	}
	for _, c := range checks {
		m := regexp.MustCompile(c.pattern).FindStringSubmatch(readRepoFile(t, c.file))
		if m == nil || m[1] != version {
			t.Errorf("%s: version %q, want %q (the VERSION file)", c.file, m, version)
		}
	}
	// Both packages set main.version through -X; build the way they do.
	if !strings.Contains(readRepoFile(t, "openwrt/Makefile"), "GO_PKG_LDFLAGS_X:=main.version=$(PKG_VERSION)") ||
		!strings.Contains(readRepoFile(t, "buildroot/package/sluice/sluice.mk"), "-X main.version=$(SLUICE_VERSION)") {
		t.Fatal("a package Makefile does not pass -X main.version")
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./cmd/sluice")
	build.Dir = repoFile(t, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "sluice "+version+" ") {
		t.Errorf("sluice version = %q, %v; want it to start with %q", out, err, "sluice "+version)
	}
}

// TestPackageDefaultConfigs checks that the configs the packages install
// pass `sluice check`, and that the packages install what they should
// where they should.
func TestPackageDefaultConfigs(t *testing.T) {
	for _, f := range []string{"openwrt/files/sluice.config", "buildroot/package/sluice/sluice.conf"} {
		res := runSluice(t, "check", "-c", repoFile(t, f))
		if res.code != 0 {
			t.Errorf("sluice check %s: exit %d\n%s", f, res.code, res.stderr)
		}
	}
	owrt := readRepoFile(t, "openwrt/Makefile")
	for _, want := range []string{
		"include $(TOPDIR)/feeds/packages/lang/golang/golang-package.mk",
		"GO_PKG:=github.com/sluice-proxy/sluice",
		"GO_PKG_LDFLAGS:=-s -w",
		"define Package/sluice/conffiles\n/etc/config/sluice\nendef",
		"$(PKG_BUILD_DIR)/openwrt/files/sluice.config $(1)/etc/config/sluice",
		"$(PKG_BUILD_DIR)/init.d/sluice.init $(1)/etc/init.d/sluice",
	} {
		if !strings.Contains(owrt, want) {
			t.Errorf("openwrt/Makefile lacks %q", want)
		}
	}
	br := readRepoFile(t, "buildroot/package/sluice/sluice.mk")
	for _, want := range []string{"$(eval $(golang-package))", "SLUICE_GOMOD = github.com/sluice-proxy/sluice",
		"$(TARGET_DIR)/etc/sluice.conf", "init.d/S50sluice $(TARGET_DIR)/etc/init.d/S50sluice"} {
		if !strings.Contains(br, want) {
			t.Errorf("sluice.mk lacks %q", want)
		}
	}
	if !strings.Contains(readRepoFile(t, "buildroot/external.desc"), "name: SLUICE") ||
		!strings.Contains(readRepoFile(t, "buildroot/Config.in"), "$BR2_EXTERNAL_SLUICE_PATH/package/sluice/Config.in") ||
		!strings.Contains(readRepoFile(t, "buildroot/external.mk"), "$(BR2_EXTERNAL_SLUICE_PATH)/package/*/*.mk") {
		t.Error("the BR2_EXTERNAL tree (external.desc, Config.in, external.mk) does not name SLUICE")
	}
	procd := readRepoFile(t, "init.d/sluice.init")
	for _, want := range []string{"USE_PROCD=1", "procd_set_param respawn", `procd_add_reload_trigger "sluice"`, "procd_set_param reload_signal HUP", `"$PROG" run -c "$CONF"`} {
		if !strings.Contains(procd, want) {
			t.Errorf("init.d/sluice.init lacks %q", want)
		}
	}
}
