package main

import (
	"context"
	"fmt"
	"io"

	"github.com/countersign/countersign/migrations"
)

func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg, err := loadConfig("migrate", args, stdout, getenv, kindMigrate, nil)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	db, _, closeDB, err := openDB(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := migrations.Apply(ctx, db.DB, logger); err != nil {
		return err
	}
	v, err := migrations.Current(ctx, db.DB)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database at migration %d\n", v)
	return nil
}
