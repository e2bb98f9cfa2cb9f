package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/privdrop"
)

// prepareDrop decides, before the node starts, whether `tomoe up` gives
// root up once the node is up (config run.user), and checks that the
// user can then write where the node writes. It returns nil when there is
// nothing to do: not started as root (as under the unit's User=tomoe with
// AmbientCapabilities=, which keeps working unchanged), run.user =
// "root", or run.user unset and no user "tomoe" here, which it says once.
func prepareDrop(cfg *config.Config, cfgPath string, log *slog.Logger) (*privdrop.Plan, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name, explicit := cfg.RunUser()
	if name == "" {
		if !explicit {
			log.Info(`running as root: no user "`+config.DefaultRunUser+`" here; set [run] user = "NAME" to run as NAME with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE once the node is up, or user = "root" to keep root`, "user", "root")
		}
		return nil, nil
	}
	t, err := privdrop.Lookup(name)
	if err != nil {
		return nil, err
	}
	if t.UID == 0 {
		return nil, nil
	}
	if shell, login := privdrop.LoginShell(name); login {
		log.Warn("run.user can log in (it has a login shell): whoever logs in as it reaches the node's key and admin socket; use a system user of tomoe's own (useradd --system --no-create-home --shell /usr/sbin/nologin tomoe)", "user", name, "shell", shell)
	}
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return privdrop.Prepare(t, cfg.StateDirs(), []string{abs})
}

// dropPrivileges runs the plan once the node is up: the admin socket and
// the key file go to the user with its directories, then every thread
// becomes the user with only the capabilities the node still needs.
func dropPrivileges(plan *privdrop.Plan, cfg *config.Config, log *slog.Logger) error {
	if err := plan.Drop(cfg.Admin.Socket, cfg.KeyFile); err != nil {
		return err
	}
	log.Info("gave up root", "user", plan.Target.Name, "uid", plan.Target.UID, "gid", plan.Target.GID,
		"caps", strings.Join(privdrop.KeepNames(), ","))
	return nil
}
