package daemon

import (
	"io"
	"log/slog"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/config"
)

// TestSetRates builds the registry from class and user sections and
// reloads it: a user who stays keeps their state, a changed class rate
// reaches them, a user who leaves the class is dropped.
func TestSetRates(t *testing.T) {
	const hash = "$2a$04$Jo8bBfNbMO1QK4wz3wYsq.1BWLh9j6r.BNsydz2VJyFmb0FyvUZFu"
	parse := func(kidsDown string, bobClass string) *config.Config {
		t.Helper()
		text := "config class 'kids'\n\toption rate_down '" + kidsDown + "'\n\toption max_conns '3'\n\n" +
			"config user 'anna'\n\toption password '" + hash + "'\n\toption class 'kids'\n\toption rate_up '1mbit'\n\n" +
			"config user 'bob'\n\toption password '" + hash + "'\n\toption class '" + bobClass + "'\n"
		cfg, errs := config.Parse("t.conf", []byte(text))
		if errs != nil {
			t.Fatal(errs)
		}
		return cfg
	}
	d := &Daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.setRates(parse("10mbit", "kids"))
	anna, bob := d.rates.User("anna"), d.rates.User("bob")
	if anna == nil || bob == nil {
		t.Fatal("anna and bob should be limited")
	}
	if anna.Up().Rate() != 125000 || anna.Down().Rate() != 1250000 || anna.MaxConns() != 3 || bob.Up() != nil {
		t.Fatalf("anna: up %d down %d max %d; bob up %v", anna.Up().Rate(), anna.Down().Rate(), anna.MaxConns(), bob.Up())
	}
	if !anna.Acquire() {
		t.Fatal("anna: no connection")
	}
	down := anna.Down()

	d.setRates(parse("20mbit", "staff")) // reload: kids faster, bob out of the class
	if d.rates.User("anna") != anna || anna.Down() != down || down.Rate() != 2500000 || anna.Conns() != 1 {
		t.Fatalf("anna after reload: same %v, rate %d, conns %d", d.rates.User("anna") == anna, down.Rate(), anna.Conns())
	}
	if d.rates.User("bob") != nil {
		t.Fatal("bob is in a class without a section: no limits")
	}
	if st := d.rateStats(); len(st) != 1 || st[0] != (RateStats{User: "anna", RateUp: 125000, RateDown: 2500000, MaxConns: 3, Conns: 1}) {
		t.Fatalf("rateStats() = %+v", st)
	}
}
