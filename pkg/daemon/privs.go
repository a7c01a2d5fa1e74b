package daemon

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"
)

// dropPrivileges switches the whole process to userName and groupName (either
// may be empty). With only a user, its primary group is used. Go applies
// setuid and setgid to every thread.
func dropPrivileges(userName, groupName string) error {
	if userName == "" && groupName == "" {
		return nil
	}
	uid, gid, err := lookupIDs(userName, groupName)
	if err != nil {
		return err
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("drop privileges: setgroups: %w (sluice must start as root to change user)", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("drop privileges: setgid %d: %w", gid, err)
	}
	if uid >= 0 {
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("drop privileges: setuid %d: %w", uid, err)
		}
	}
	return nil
}

// lookupIDs returns the uid and gid sluice drops to: -1 for a uid when
// userName is empty; the user's primary group unless groupName is set.
func lookupIDs(userName, groupName string) (uid, gid int, err error) {
	uid, gid = -1, -1
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			return 0, 0, fmt.Errorf("drop privileges: user %q: %w", userName, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			return 0, 0, fmt.Errorf("drop privileges: group %q: %w", groupName, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}
