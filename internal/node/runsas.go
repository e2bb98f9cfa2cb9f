package node

import (
	"os/user"
	"strconv"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/privdrop"
)

// runsAs tells the user and capabilities the process runs with (after
// `tomoe up` gave root up, every thread has the same); nil where it
// cannot be told.
func runsAs() *adminapi.RunsAs {
	c, err := privdrop.Current()
	if err != nil {
		return nil
	}
	r := &adminapi.RunsAs{UID: c.UID[1], GID: c.GID[1], Caps: privdrop.CapNames(c.Eff), NoNewPrivs: c.NoNewPrivs}
	if u, err := user.LookupId(strconv.Itoa(r.UID)); err == nil {
		r.User = u.Username
	}
	return r
}
