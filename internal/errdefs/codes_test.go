package errdefs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// declared parses codes.go: every declared code's name and class
// expression ("ErrNotFound", "nil", ...), in declaration order.
func declared(t *testing.T) (names []string, classes map[string]string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	classes = map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok || len(lit.Elts) != 2 {
			return true
		}
		if id, ok := lit.Type.(*ast.Ident); !ok || id.Name != "Code" {
			return true
		}
		b, ok := lit.Elts[0].(*ast.BasicLit)
		if !ok {
			t.Fatalf("a Code whose name is not a literal: %#v", lit.Elts[0])
		}
		name, _ := strconv.Unquote(b.Value)
		if _, dup := classes[name]; dup {
			t.Errorf("%s declared twice", name)
		}
		names = append(names, name)
		classes[name] = exprString(lit.Elts[1])
		return true
	})
	return names, classes
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return "?"
}

// codeShaped matches what an error code looks like.
var codeShaped = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)

// notCodes are code-shaped strings that name other things: environment
// variables, JetStream assets, protobuf enum prefixes.
var notCodes = regexp.MustCompile(`^(SPEAR_|EXECUTION_STATUS_|EXECUTION_MODE_|INVOCATION_TYPE_|KV_|OBJ_)`)

// TestNoUndeclaredCodes fails when product code spells an error code as a
// string literal (every code is a declared Code, codes.go) or makes a Code
// of its own.
func TestNoUndeclaredCodes(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == "api" || rel == ".git" || rel == filepath.Join("internal", "errdefs")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				s, err := strconv.Unquote(n.Value)
				if n.Kind == token.STRING && err == nil && codeShaped.MatchString(s) && !notCodes.MatchString(s) {
					t.Errorf("%s: error code %q spelled as a literal: use the declared errdefs code", fset.Position(n.Pos()), s)
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Code" && exprString(sel.X) == "errdefs" {
					t.Errorf("%s: a Code made outside errdefs: declare it in codes.go", fset.Position(n.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestREADMECodes: README's error-code table lists exactly the declared
// codes, each with its class.
func TestREADMECodes(t *testing.T) {
	names, classes := declared(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\| ([a-z ]+|outcome) \\|")
	inREADME := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		inREADME[m[1]] = m[2]
	}
	for _, name := range names {
		got, ok := inREADME[name]
		switch {
		case !ok:
			t.Errorf("README's error-code table lacks %s", name)
		case got != classWords(classes[name]):
			t.Errorf("README says %s is %q, codes.go %q", name, got, classWords(classes[name]))
		}
		delete(inREADME, name)
	}
	for name := range inREADME {
		t.Errorf("README lists %s, which is not declared", name)
	}
}

// classWords is how README names a class: "not found" for ErrNotFound,
// "outcome" for nil.
func classWords(class string) string {
	switch class {
	case "nil":
		return "outcome"
	case "context.DeadlineExceeded":
		return "deadline exceeded"
	case "context.Canceled":
		return "cancelled"
	}
	s := strings.TrimPrefix(class, "Err")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToLower(b.String())
}
