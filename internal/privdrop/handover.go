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

	"golang.org/x/sys/unix"

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
// less trusted user. Nor one holding any of keep (the config file), or a
// directory above it: the user could then replace it and name root as
// run.user; and the config file itself must not be the user's or one it
// can write.
//
// Paths are resolved (symbolic links) first, and refused if the run user
// could change where they lead: a directory looked up on the way (above
// a state directory or the config, or where a link on the way is read)
// that the user owns or may write (but for a sticky one, as /tmp, in
// which the entry exists and is not the user's). The drop works on the
// resolved directories, opened from / without following links.
func Prepare(t Target, dirs, keep []string) (*Plan, error) {
	p := &Plan{Target: t}
	type kept struct{ path, dir string }
	var keepDirs []kept
	for _, k := range keep {
		if k == "" {
			continue
		}
		rk, err := t.checkPath(k, "the config file")
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(rk)
		if err != nil {
			return nil, fmt.Errorf("run.user %s: %w", t.Name, err)
		}
		if uid, gid := owner(fi); uid == t.UID || t.mayWrite(fi.Mode(), uid, gid) {
			return nil, fmt.Errorf("run.user %s: that user can write the config file %s, and could name root as run.user: chown root %s and chmod go-w %s, or set run.user = \"root\"", t.Name, k, k, k)
		}
		keepDirs = append(keepDirs, kept{k, filepath.Dir(rk)})
	}
	for _, d := range dirs {
		rd, err := t.checkPath(d, "a directory the node writes in")
		if err != nil {
			return nil, err
		}
		for _, kp := range keepDirs {
			if k, kd := kp.path, kp.dir; kd == rd || strings.HasPrefix(kd, rd+"/") || rd == "/" {
				return nil, fmt.Errorf("run.user %s: the node writes in %s, which holds %s: that user could replace it; keep the node's files elsewhere (key_file = \"/var/lib/tomoe/node.key\", admin.socket = \"/run/tomoe/admin.sock\"), or set run.user = \"root\"", t.Name, d, k)
			}
		}
		own, err := t.checkDir(d, rd)
		if err != nil {
			return nil, err
		}
		p.dirs = append(p.dirs, dir{path: rd, own: own})
	}
	fileperm.TrustNextUser(t.UID)
	return p, nil
}

// checkPath resolves path (its symbolic links; what is missing of it is
// taken as it is written) and fails if the run user could change where
// it leads: if a directory it is looked up through (each above it, and
// each a symbolic link on the way is read in) is the user's, or one the
// user may write, but for a sticky one (as /tmp) in which what is looked
// up exists and is not the user's. what names path in the error.
func (t Target) checkPath(path, what string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("run.user %s: %w", t.Name, err)
	}
	rest := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	cur, links := "/", 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		missing := errors.Is(err, fs.ErrNotExist)
		if err != nil && !missing {
			return "", fmt.Errorf("run.user %s: %w", t.Name, err)
		}
		dfi, err := os.Lstat(cur)
		if err != nil {
			return "", fmt.Errorf("run.user %s: %w", t.Name, err)
		}
		entryUID := -1
		if !missing {
			entryUID, _ = owner(fi)
		}
		if t.controls(dfi, entryUID) {
			return "", fmt.Errorf("run.user %s: %s %s is reached through %s, which that user owns or can write: it could make that path lead elsewhere (to root's files); keep the node's files and config elsewhere (key_file = \"/var/lib/tomoe/node.key\"), or set run.user = \"root\"", t.Name, what, path, cur)
		}
		if missing {
			return filepath.Join(append([]string{next}, rest...)...), nil
		}
		if fi.Mode().Type() == fs.ModeSymlink {
			if links++; links > 40 {
				return "", fmt.Errorf("run.user %s: %s: too many symbolic links", t.Name, path)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", fmt.Errorf("run.user %s: %w", t.Name, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if !fi.IsDir() && len(rest) > 0 {
			return "", fmt.Errorf("run.user %s: %s: %s is not a directory", t.Name, path, next)
		}
		cur = next
	}
	return cur, nil
}

// controls reports whether t could replace what it finds in the directory
// d: d is t's, or t may write it, but for a sticky one in which the entry
// looked up exists (entryUID >= 0) and is not t's.
func (t Target) controls(d fs.FileInfo, entryUID int) bool {
	uid, gid := owner(d)
	if uid == t.UID {
		return true
	}
	if !t.canWrite(d.Mode(), uid, gid) {
		return false
	}
	return d.Mode()&fs.ModeSticky == 0 || entryUID < 0 || entryUID == t.UID
}

// checkDir decides whether d, resolved to rd, is the node's own: see
// Prepare.
func (t Target) checkDir(d, rd string) (own bool, err error) {
	if err := t.reach(filepath.Dir(rd)); err != nil {
		return false, err
	}
	fi, err := os.Lstat(rd)
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
	case uid == 0 && strings.HasPrefix(filepath.Base(rd), "tomoe"):
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

// mayWrite reports whether t, with no supplementary groups, may write a
// file of mode m owned by uid:gid.
func (t Target) mayWrite(m fs.FileMode, uid, gid int) bool {
	perm := uint32(m.Perm())
	switch {
	case uid == t.UID:
		return perm&0o200 != 0
	case gid == t.GID:
		return perm&0o020 != 0
	}
	return perm&0o002 != 0
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
// made in them (regular files and sockets with one link, not what is
// below them), and files, if root owns them. The groups stay: the admin
// socket stays its group's. Nothing is reached through a symbolic link,
// and each directory on the way is checked again (see Prepare): every
// file is opened without following links (O_PATH|O_NOFOLLOW) from its
// directory's descriptor and chowned through that descriptor.
func (p *Plan) handOver(files []string) error {
	t := p.Target
	for _, d := range p.dirs {
		if !d.own {
			continue
		}
		fd, err := t.openDir(d.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the node did not need it after all
		}
		if err != nil {
			return err
		}
		err = t.handOverDir(fd, d.path)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Dir(f))
		if err != nil {
			continue
		}
		dfd, err := t.openDir(dir)
		if err != nil {
			continue
		}
		err = t.give(dfd, filepath.Base(f), f, true)
		unix.Close(dfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// handOverDir hands over the directory fd (at path) and root's files in it.
func (t Target) handOverDir(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("run.user %s: %s: %w", t.Name, path, err)
	}
	if st.Uid == 0 {
		if err := unix.Fchown(fd, t.UID, -1); err != nil {
			return fmt.Errorf("run.user %s: hand over %s: %w", t.Name, path, err)
		}
	}
	// The directory is now the user's: what it holds is read through fd,
	// and each file is checked by its descriptor, not its name.
	dup, err := unix.Dup(fd)
	if err != nil {
		return fmt.Errorf("run.user %s: %w", t.Name, err)
	}
	f := os.NewFile(uintptr(dup), path)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("run.user %s: %s: %w", t.Name, path, err)
	}
	for _, name := range names {
		if err := t.give(fd, name, filepath.Join(path, name), false); err != nil {
			return err
		}
	}
	return nil
}

// give hands the file name in the directory dfd (path, for errors) to t
// if it is root's, a regular file or a socket, and has a single link (a
// hard link to a file of root's elsewhere is not handed over).
func (t Target) give(dfd int, name, path string, named bool) error {
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone meanwhile, or a link: not handed over
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("run.user %s: %s: %w", t.Name, path, err)
	}
	typ := st.Mode & unix.S_IFMT
	if st.Uid != 0 || (typ != unix.S_IFREG && typ != unix.S_IFSOCK) {
		return nil
	}
	if st.Nlink != 1 {
		if named {
			return fmt.Errorf("run.user %s: %s has %d hard links: remove the others, or the file, and start again", t.Name, path, st.Nlink)
		}
		return nil
	}
	if err := unix.Fchownat(fd, "", t.UID, -1, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("run.user %s: hand over %s: %w", t.Name, path, err)
	}
	return nil
}

// openDir opens the directory path (absolute, its links resolved) one
// component at a time from /, following no symbolic link, and fails if
// the user could replace a directory on the way (see checkPath).
func (t Target) openDir(path string) (int, error) {
	fd, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("run.user %s: %w", t.Name, err)
	}
	for _, name := range strings.Split(strings.TrimPrefix(filepath.Clean(path), "/"), "/") {
		if name == "" {
			continue
		}
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.ENOENT) {
				return -1, fs.ErrNotExist
			}
			return -1, fmt.Errorf("run.user %s: open %s: %w", t.Name, path, err)
		}
		var ds, es unix.Stat_t
		if err := unix.Fstat(fd, &ds); err == nil {
			err = unix.Fstat(next, &es)
		}
		if err != nil || t.controlsStat(&ds, int(es.Uid)) {
			unix.Close(fd)
			unix.Close(next)
			return -1, fmt.Errorf("run.user %s: %s is reached through a directory that user owns or can write", t.Name, path)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

func (t Target) controlsStat(d *unix.Stat_t, entryUID int) bool {
	if int(d.Uid) == t.UID {
		return true
	}
	if !t.canWrite(fs.FileMode(d.Mode&0o777), int(d.Uid), int(d.Gid)) {
		return false
	}
	return d.Mode&unix.S_ISVTX == 0 || entryUID == t.UID
}
