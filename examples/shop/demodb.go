package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// useDemoDatabase creates a database of the demo's own on cfg's server and
// points cfg at it, so the demo leaves nothing in the database DATABASE_URL
// names. drop removes it again; call it once the pool on cfg is closed.
func useDemoDatabase(ctx context.Context, cfg *pgxpool.Config) (drop func() error, err error) {
	admin := cfg.ConnConfig.Copy()
	name := "shop_demo_" + strings.ToLower(ulid.Make().String())
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL (set DATABASE_URL): %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create the demo's database %s (the demo needs the CREATEDB privilege): %w", name, err)
	}
	cfg.ConnConfig.Database = name
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, admin)
		if err != nil {
			return fmt.Errorf("drop the demo's database %s: %w", name, err)
		}
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return errors.Join(err, conn.Close(ctx))
	}, nil
}
