package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/httpcache"
)

// newCache creates an http_proxy's cache. Its directory is created and,
// when sluice runs as root and drops privileges later, given (with the
// files in it) to the user it drops to, so the cache can still write,
// replace and remove its files afterwards.
func (d *Daemon) newCache(h config.HTTPProxy, g config.Global) (*httpcache.Cache, error) {
	if h.CacheDir != "" {
		if err := os.MkdirAll(h.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("cache_dir: %w", err)
		}
		if (g.User != "" || g.Group != "") && os.Geteuid() == 0 {
			uid, gid, err := lookupIDs(g.User, g.Group)
			if err != nil {
				return nil, err
			}
			if err := chownFlat(h.CacheDir, uid, gid); err != nil {
				return nil, fmt.Errorf("cache_dir: %w", err)
			}
		}
	}
	c, err := httpcache.New(httpcache.Config{MaxBytes: h.CacheSize, MaxObject: h.CacheMaxObject,
		Dir: h.CacheDir, DirMaxBytes: h.CacheDirSize, Log: d.log.With("http_proxy", h.Name)})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return c, nil
}

// chownFlat gives dir and the regular files directly in it to uid and gid
// (-1 keeps one).
func chownFlat(dir string, uid, gid int) error {
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		if de.Type().IsRegular() {
			if err := os.Chown(filepath.Join(dir, de.Name()), uid, gid); err != nil {
				return err
			}
		}
	}
	return nil
}
