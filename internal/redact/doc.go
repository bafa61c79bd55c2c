// Package redact removes secrets from values before they reach an output:
// logs, error messages, `pdsmux status`, the metrics listener's
// /debug/pprof/cmdline.
//
// URL works on any string, including one net/url cannot parse (a Redis
// password holding "/" or "%zz", a scheme typo such as "redis//"), so a
// malformed setting can be named in an error without printing its
// password. Args does the same for a command line.
package redact
