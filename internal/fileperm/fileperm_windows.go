package fileperm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Access rights an ACE can give (winnt.h). A State file or a directory
// must give nobody untrusted any of writeRights; a Secret nothing of
// readRights either.
const (
	readRights = 0x0001 | // FILE_READ_DATA, FILE_LIST_DIRECTORY
		0x80000000 // GENERIC_READ
	writeRights = 0x0002 | // FILE_WRITE_DATA, FILE_ADD_FILE
		0x0004 | // FILE_APPEND_DATA, FILE_ADD_SUBDIRECTORY
		0x0040 | // FILE_DELETE_CHILD
		0x00010000 | // DELETE
		0x00040000 | // WRITE_DAC
		0x00080000 | // WRITE_OWNER
		0x10000000 | // GENERIC_ALL
		0x40000000 // GENERIC_WRITE
	inheritOnly = 0x08 // INHERIT_ONLY_ACE: a template for children, no access here
)

func (c checker) checkFile(path, what string, kind Kind, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, path)
	}
	var deny uint32
	switch kind {
	case Secret:
		deny = readRights | writeRights
	case State:
		deny = writeRights
	default:
		return fmt.Errorf("%s %s: fileperm: unknown kind %d", what, path, kind)
	}
	return checkACL(path, what, deny)
}

func (c checker) checkDir(dir, what string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s directory %s: not a directory", what, dir)
	}
	return checkACL(dir, what+" directory", writeRights)
}

// checkACL refuses path unless a trusted account owns it and its DACL
// gives no untrusted account any of the rights in deny.
func checkACL(path, what string, deny uint32) error {
	fix := fmt.Sprintf("fix with: icacls \"%s\" /inheritance:r /grant:r \"%%USERNAME%%:F\" SYSTEM:F Administrators:F", path)
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("%s %s: read its security descriptor: %w", what, path, err)
	}
	trusted, err := trustedSIDs()
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	owner, _, err := sd.Owner()
	if err != nil || owner == nil {
		return fmt.Errorf("%s %s: cannot tell its owner", what, path)
	}
	if !isTrusted(owner, trusted) {
		return fmt.Errorf("%s %s is owned by %s: only the user tomoe runs as, SYSTEM or Administrators may own it, or its owner could change what this node trusts; fix with: icacls \"%s\" /setowner Administrators", what, path, owner, path)
	}
	dacl, _, err := sd.DACL()
	if err != nil && !errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) {
		return fmt.Errorf("%s %s: read its DACL: %w", what, path, err)
	}
	if dacl == nil {
		return fmt.Errorf("%s %s has no DACL: everyone may access it; %s", what, path, fix)
	}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return fmt.Errorf("%s %s: read its DACL: %w", what, path, err)
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || ace.Header.AceFlags&inheritOnly != 0 || ace.Mask&windows.ACCESS_MASK(deny) == 0 {
			continue
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if isTrusted(sid, trusted) {
			continue
		}
		name := sid.String()
		if acct, dom, _, err := sid.LookupAccount(""); err == nil {
			name = dom + `\` + acct
		}
		return fmt.Errorf("%s %s gives %s access (mask %#x) that only the user tomoe runs as, SYSTEM and Administrators may have; %s", what, path, name, ace.Mask, fix)
	}
	return nil
}

// trustedSIDs are the accounts that may own and change tomoe's files:
// the user tomoe runs as, SYSTEM and Administrators.
func trustedSIDs() ([]*windows.SID, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("who runs tomoe: %w", err)
	}
	sys, err := windows.CreateWellKnownSid(windows.WinLocalSystemSid)
	if err != nil {
		return nil, err
	}
	admins, err := windows.CreateWellKnownSid(windows.WinBuiltinAdministratorsSid)
	if err != nil {
		return nil, err
	}
	return []*windows.SID{tu.User.Sid, sys, admins}, nil
}

func isTrusted(sid *windows.SID, trusted []*windows.SID) bool {
	for _, t := range trusted {
		if sid.Equals(t) {
			return true
		}
	}
	return false
}

// MkdirPrivate creates dir and its missing parents; dir itself, if it
// was missing, gets a DACL of its own (not inherited) that gives only the
// user tomoe runs as, SYSTEM and Administrators access, inherited by what
// is created in it.
func MkdirPrivate(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return SetPrivateACL(dir, "")
}

// SetPrivateACL gives path a protected DACL (no inherited entries) that
// gives full access to the user tomoe runs as, SYSTEM, Administrators and,
// if groupSID is not "", that group; a directory's entries are inherited
// by what is created in it.
func SetPrivateACL(path, groupSID string) error {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("who runs tomoe: %w", err)
	}
	inherit := ""
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		inherit = "OICI"
	}
	sddl := "D:P(A;" + inherit + ";FA;;;SY)(A;" + inherit + ";FA;;;BA)(A;" + inherit + ";FA;;;" + tu.User.Sid.String() + ")"
	if groupSID != "" {
		if _, err := windows.StringToSid(groupSID); err != nil {
			return fmt.Errorf("group %s: %w", groupSID, err)
		}
		sddl += "(A;" + inherit + ";FRFW;;;" + groupSID + ")"
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	if err := windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		return fmt.Errorf("set the ACL of %s: %w", path, err)
	}
	return nil
}
