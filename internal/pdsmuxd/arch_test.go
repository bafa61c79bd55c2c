package pdsmuxd_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pdsmux/pdsmux/internal/testutil/proc"
)

var docPath = regexp.MustCompile("`((?:internal|cmd)/[A-Za-z0-9_./-]+)`")

// docs/ARCHITECTURE.md names only paths that exist, its package table
// names every package directly under internal/ and cmd/, and every
// package under them has a doc.go carrying its package comment.
func TestArchitecture_PackagesMatchTheDoc(t *testing.T) {
	root := proc.ModuleRoot()
	doc := repoFile(t, "docs", "ARCHITECTURE.md")
	named := map[string]bool{}
	for _, m := range docPath.FindAllStringSubmatch(doc, -1) {
		named[m[1]] = true
		_, err := os.Stat(filepath.Join(root, m[1]))
		require.NoError(t, err, "docs/ARCHITECTURE.md names %s, which does not exist", m[1])
	}

	var pkgs []string
	for _, top := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			src, _ := filepath.Glob(filepath.Join(path, "*.go"))
			for _, f := range src {
				if !strings.HasSuffix(f, "_test.go") {
					rel, _ := filepath.Rel(root, path)
					pkgs = append(pkgs, filepath.ToSlash(rel))
					break
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	sort.Strings(pkgs)
	require.Contains(t, pkgs, "internal/cursor", "the walk found the packages")
	for _, pkg := range pkgs {
		if strings.Count(pkg, "/") == 1 {
			require.True(t, named[pkg], "docs/ARCHITECTURE.md does not name package %s", pkg)
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, pkg, "doc.go"), nil, parser.ParseComments|parser.PackageClauseOnly)
		require.NoError(t, err, "package %s has no doc.go", pkg)
		require.NotNil(t, f.Doc, "%s/doc.go has no package comment", pkg)
		want := "Package " + f.Name.Name + " "
		if f.Name.Name == "main" {
			want = "Command " + filepath.Base(pkg) + " "
		}
		require.True(t, strings.HasPrefix(f.Doc.Text(), want), "%s/doc.go: the comment starts %q", pkg, want)
	}
}
