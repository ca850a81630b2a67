package release

import "github.com/incpathd/incpathd/pathsafe"

// throughError: resolving a release visited the link being replaced, or
// its previous-target record.
type throughError struct{ path string }

func (e *throughError) Error() string { return "resolves through " + e.path }

// resolve returns the physical path of the absolute path p, following every
// symlink as filepath.EvalSymlinks does, but fails with a *throughError when
// the walk visits one of the physical paths avoid. filepath.EvalSymlinks cannot say
// that: it would follow the link to its current target, and a release that
// resolves through the link would be accepted, then turned into a link that
// points at itself.
func resolve(p string, avoid ...string) (string, error) {
	w := pathsafe.Walker{Visit: func(_, _, next string) error {
		for _, a := range avoid {
			if next == a {
				return &throughError{a}
			}
		}
		return nil
	}}
	dest, _, err := w.Walk(p)
	return dest, err
}
