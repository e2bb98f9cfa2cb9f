//go:build linux

package privdrop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tomoe-net/tomoe/internal/fileperm"
)

// Plan is a drop prepared before the node starts.
type Plan struct {
	Target Target
	dirs   []dir
}

type dir struct {
	path string
	// own: the directory is (or becomes) the run user's, with the files
	// root made in it. Otherwise the user can write it already (as /tmp)
	// and only the files the node names are handed over.
	own bool
}

// Prepare, called as root before the node starts, checks that the run
// user will be able to write each of dirs (the directories the node
// writes in), and makes the files the run user owns pass package
// fileperm's owner checks, as the node is about to run as that user.
//
// A directory is handed over to the user, with the files root makes in it,
// if it is missing (the node creates it), already the user's, or owned by
// root and named tomoe* (as /var/lib/tomoe and /run/tomoe, and what
// systemd's StateDirectory=tomoe and RuntimeDirectory=tomoe make): the
// node's own. A directory the user can already write (a sticky /tmp) is
// left as it is. Any other directory is an error naming the fix: tomoe
// does not hand a directory that may hold other programs' files to a
// less trusted user. Nor one holding any of keep (the config file): the
// user could then replace it and name root as run.user.
func Prepare(t Target, dirs, keep []string) (*Plan, error) {
	p := &Plan{Target: t}
	for _, d := range dirs {
		own, err := t.checkDir(d, keep)
		if err != nil {
			return nil, err
		}
		p.dirs = append(p.dirs, dir{path: d, own: own})
	}
	fileperm.TrustNextUser(t.UID)
	return p, nil
}

func (t Target) checkDir(d string, keep []string) (own bool, err error) {
	for _, k := range keep {
		if k != "" && filepath.Dir(k) == d {
			return false, fmt.Errorf("run.user %s: the node writes in %s, which holds %s: that user could replace it; keep the node's files elsewhere (key_file = \"/var/lib/tomoe/node.key\", admin.socket = \"/run/tomoe/admin.sock\"), or set run.user = \"root\"", t.Name, d, k)
		}
	}
	if err := t.reach(filepath.Dir(d)); err != nil {
		return false, err
	}
	fi, err := os.Stat(d)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("run.user %s: %w", t.Name, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("run.user %s: %s is not a directory", t.Name, d)
	}
	uid, gid := owner(fi)
	switch {
	case uid == t.UID:
		return true, nil
	case uid == 0 && strings.HasPrefix(filepath.Base(d), "tomoe"):
		return true, nil
	case t.canWrite(fi.Mode(), uid, gid):
		return false, nil
	}
	return false, fmt.Errorf("run.user %s: the node writes in %s, which that user cannot write and which is not tomoe's own (named tomoe*): chown %s %s, or use a directory of tomoe's, or set run.user = \"root\"", t.Name, d, t.Name, d)
}

// canWrite reports whether t, with no supplementary groups, may create
// and remove files in a directory of mode m owned by uid:gid.
func (t Target) canWrite(m fs.FileMode, uid, gid int) bool {
	const wx = 0o3
	perm := uint32(m.Perm())
	switch {
	case uid == t.UID:
		return perm>>6&wx == wx
	case gid == t.GID:
		return perm>>3&wx == wx
	}
	return perm&wx == wx
}

// reach fails if t could not pass through d or a directory above it
// (search permission); directories missing yet are not checked.
func (t Target) reach(d string) error {
	for {
		if fi, err := os.Stat(d); err == nil {
			uid, gid := owner(fi)
			perm := uint32(fi.Mode().Perm())
			var x bool
			switch {
			case uid == t.UID:
				x = perm&0o100 != 0
			case gid == t.GID:
				x = perm&0o010 != 0
			default:
				x = perm&0o001 != 0
			}
			if !x {
				return fmt.Errorf("run.user %s: that user cannot pass through %s (mode %04o), on the way to where the node writes: keep the node's files elsewhere (key_file = \"/var/lib/tomoe/node.key\"), or set run.user = \"root\"", t.Name, d, perm)
			}
		}
		up := filepath.Dir(d)
		if up == d {
			return nil
		}
		d = up
	}
}

func owner(fi fs.FileInfo) (uid, gid int) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1
	}
	return int(st.Uid), int(st.Gid)
}

// handOver gives the run user its directories and the files that root
// made in them (regular files and sockets, not what is below them), and
// files, if root owns them. The groups stay: the admin socket stays its
// group's. Symbolic links are not followed.
func (p *Plan) handOver(files []string) error {
	t := p.Target
	give := func(path string, fi fs.FileInfo) error {
		if uid, _ := owner(fi); uid != 0 {
			return nil
		}
		if err := os.Lchown(path, t.UID, -1); err != nil {
			return fmt.Errorf("run.user %s: hand over %s: %w", t.Name, path, err)
		}
		return nil
	}
	for _, d := range p.dirs {
		if !d.own {
			continue
		}
		fi, err := os.Lstat(d.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the node did not need it after all
		}
		if err != nil {
			return fmt.Errorf("run.user %s: %w", t.Name, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("run.user %s: %s is not a directory", t.Name, d.path)
		}
		if err := t.reach(filepath.Dir(d.path)); err != nil {
			return err
		}
		if err := give(d.path, fi); err != nil {
			return err
		}
		entries, err := os.ReadDir(d.path)
		if err != nil {
			return fmt.Errorf("run.user %s: %w", t.Name, err)
		}
		for _, e := range entries {
			if typ := e.Type(); typ != 0 && typ != fs.ModeSocket {
				continue
			}
			path := filepath.Join(d.path, e.Name())
			fi, err := os.Lstat(path)
			if err != nil {
				continue // gone meanwhile
			}
			if err := give(path, fi); err != nil {
				return err
			}
		}
	}
	for _, f := range files {
		fi, err := os.Lstat(f)
		if err != nil || !(fi.Mode().IsRegular() || fi.Mode().Type() == fs.ModeSocket) {
			continue
		}
		if err := give(f, fi); err != nil {
			return err
		}
	}
	return nil
}
