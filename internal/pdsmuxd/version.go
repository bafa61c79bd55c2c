package pdsmuxd

// Version is set at build time with -ldflags "-X github.com/pdsmux/pdsmux/internal/pdsmuxd.Version=...".
var Version = "dev"
