package sandbox

import "os"

// ThreadPolicy is the confinement a launcher thread takes on before it
// forks functions; every child inherits it.
type ThreadPolicy struct {
	// NetNS, when set, is the network namespace the thread joins.
	NetNS *os.File
	// FS, when set, is the thread's Landlock policy.
	FS *FSRules
	// Seccomp loads the deny-list (and sets no_new_privs).
	Seccomp bool
	// NoNewPrivs sets no_new_privs even without FS or Seccomp.
	NoNewPrivs bool
}

// Apply confines the calling thread, which must be locked to its goroutine
// for good, and returns the features it took on. Namespaces come first:
// seccomp denies setns afterwards.
func (p ThreadPolicy) Apply() (features []string, err error) {
	if p.NetNS != nil {
		if err := JoinNetNS(p.NetNS); err != nil {
			return features, err
		}
		features = append(features, FeatNetNS)
	}
	if p.NoNewPrivs || p.FS != nil || p.Seccomp {
		if err := setNoNewPrivs(); err != nil {
			return features, err
		}
		features = append(features, FeatNoNewPrivs)
	}
	if p.FS != nil {
		if err := RestrictThread(*p.FS); err != nil {
			return features, err
		}
		features = append(features, FeatLandlock)
	}
	if p.Seccomp {
		if err := DenySyscalls(); err != nil {
			return features, err
		}
		features = append(features, FeatSeccomp)
	}
	return features, nil
}
