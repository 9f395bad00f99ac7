package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/store"
)

// Principal is who makes a request.
type Principal struct {
	Role string
	Site string // pilot tokens: the only site they act for
	Name string
}

// admin is the principal of every request when auth is off.
var admin = Principal{Role: store.RoleAdmin, Name: "anonymous (auth off)"}

// HashToken returns the stored form of a token secret.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewTokenSecret returns a fresh random token secret.
func NewTokenSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return "sbx_" + hex.EncodeToString(b), nil
}

// authenticate maps a bearer token to a principal.
func (b *Broker) authenticate(ctx context.Context, header string) (Principal, error) {
	if !b.cfg.Auth {
		return admin, nil
	}
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return Principal{}, errorf(api.CodeUnauthorized, "", "missing bearer token (set SCALEBOX_TOKEN or --token)")
	}
	hash := HashToken(strings.TrimSpace(secret))
	b.mu.RLock()
	t := b.tokens[hash]
	b.mu.RUnlock()
	if t == nil {
		var err error
		t, err = b.store.TokenLookup(ctx, hash)
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, errorf(api.CodeUnauthorized, "", "unknown token")
		}
		if err != nil {
			return Principal{}, err
		}
		b.mu.Lock()
		b.tokens[hash] = t
		b.mu.Unlock()
	}
	return Principal{Role: t.Role, Site: t.Site, Name: t.Name}, nil
}

// allow checks a principal against the roles a route accepts.
func allow(p Principal, roles ...string) error {
	if p.Role == store.RoleAdmin {
		return nil
	}
	for _, r := range roles {
		if p.Role == r {
			return nil
		}
	}
	return errorf(api.CodeForbidden, "", fmt.Sprintf("a %s token may not do this", p.Role))
}

// CreateToken stores a new token and returns its secret.
func (b *Broker) CreateToken(ctx context.Context, r *api.TokenRequest) (*api.TokenResponse, error) {
	switch r.Role {
	case store.RoleAdmin, store.RoleUser:
	case store.RolePilot:
		if r.Site == "" {
			return nil, errorf(api.CodeBadRequest, "site", "a pilot token needs the site it may act for")
		}
	default:
		return nil, errorf(api.CodeBadRequest, "role", fmt.Sprintf("unknown role %q (admin, user or pilot)", r.Role))
	}
	secret, err := NewTokenSecret()
	if err != nil {
		return nil, err
	}
	if err := b.store.TokenCreate(ctx, &store.Token{Hash: HashToken(secret), Name: r.Name, Role: r.Role, Site: r.Site, CreatedAt: b.now()}); err != nil {
		return nil, err
	}
	return &api.TokenResponse{Token: secret, Role: r.Role, Site: r.Site}, nil
}

// BootstrapAdminToken makes sure an admin token exists and is in path: a
// token already in the file is registered (so the file is the credential);
// otherwise, if the store has no token yet, a new one is generated and
// written to path with mode 0600.
func (b *Broker) BootstrapAdminToken(ctx context.Context, path string) error {
	if path == "" {
		return nil
	}
	if data, err := os.ReadFile(path); err == nil {
		secret := strings.TrimSpace(string(data))
		if secret == "" {
			return fmt.Errorf("token file %s is empty", path)
		}
		err := b.store.TokenCreate(ctx, &store.Token{Hash: HashToken(secret), Name: "admin (" + path + ")", Role: store.RoleAdmin, CreatedAt: b.now()})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("register admin token from %s: %w", path, err)
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read token file: %w", err)
	}
	n, err := b.store.TokenCount(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		b.log.Warn("tokens exist but the admin token file is missing; create tokens with an existing admin token", zap.String("path", path))
		return nil
	}
	secret, err := NewTokenSecret()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create token dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := b.store.TokenCreate(ctx, &store.Token{Hash: HashToken(secret), Name: "admin (" + path + ")", Role: store.RoleAdmin, CreatedAt: b.now()}); err != nil {
		return fmt.Errorf("store admin token: %w", err)
	}
	b.log.Info("created admin token", zap.String("path", path))
	return nil
}
