// Command promql-eval evaluates PromQL expressions with the Prometheus query engine itself
// (github.com/prometheus/prometheus, the version of the pinned Prometheus image), over samples
// given in the Prometheus text exposition format, parsed by Prometheus's own scrape parser.
//
// It reads one JSON request on stdin and writes one JSON answer on stdout:
//
//	{"scrapes": [{"time": 1700000000.0, "text": "# TYPE x counter\nx_total 3\n"}, ...],
//	 "queries": [{"id": "A", "expr": "rate(x_total[2m])", "time": 1700000060.0}, ...]}
//
//	{"results": [{"id": "A", "error": "", "type": "vector",
//	              "samples": [{"metric": {"__name__": ...}, "value": "0.05"}]}]}
//
// Values are strings (strconv 'g' format), so that NaN and infinities survive JSON.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"
)

type scrape struct {
	Time float64 `json:"time"`
	Text string  `json:"text"`
}

type query struct {
	ID   string  `json:"id"`
	Expr string  `json:"expr"`
	Time float64 `json:"time"`
}

type request struct {
	Scrapes []scrape `json:"scrapes"`
	Queries []query  `json:"queries"`
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  string            `json:"value"`
}

type result struct {
	ID      string   `json:"id"`
	Error   string   `json:"error"`
	Type    string   `json:"type"`
	Samples []sample `json:"samples"`
}

func millis(seconds float64) int64 {
	return int64(math.Round(seconds * 1000))
}

func load(db *tsdb.DB, scrapes []scrape) error {
	symbols := labels.NewSymbolTable()
	for _, s := range scrapes {
		app := db.Appender(context.Background())
		parser := textparse.NewPromParser([]byte(s.Text), symbols, false)
		for {
			entry, err := parser.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("scrape at %v: %w", s.Time, err)
			}
			if entry != textparse.EntrySeries {
				continue
			}
			var series labels.Labels
			parser.Labels(&series)
			_, _, value := parser.Series()
			if _, err := app.Append(0, series, millis(s.Time), value); err != nil {
				return fmt.Errorf("append %s: %w", series, err)
			}
		}
		if err := app.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func format(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func evaluate(engine *promql.Engine, db *tsdb.DB, q query) result {
	out := result{ID: q.ID, Samples: []sample{}}
	ctx := context.Background()
	at := time.UnixMilli(millis(q.Time))
	instant, err := engine.NewInstantQuery(ctx, db, nil, q.Expr, at)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer instant.Close()
	answer := instant.Exec(ctx)
	if answer.Err != nil {
		out.Error = answer.Err.Error()
		return out
	}
	switch value := answer.Value.(type) {
	case promql.Vector:
		out.Type = "vector"
		for _, s := range value {
			out.Samples = append(out.Samples, sample{s.Metric.Map(), format(s.F)})
		}
	case promql.Scalar:
		out.Type = "scalar"
		out.Samples = append(out.Samples, sample{map[string]string{}, format(value.V)})
	default:
		out.Type = string(answer.Value.Type())
		out.Error = "only instant vectors and scalars are reported"
	}
	return out
}

func run() error {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	dir, err := os.MkdirTemp("", "promql-eval-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	options := tsdb.DefaultOptions()
	options.OutOfOrderTimeWindow = math.MaxInt64 / 2
	db, err := tsdb.Open(dir, nil, nil, options, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := load(db, req.Scrapes); err != nil {
		return err
	}
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples:    50_000_000,
		Timeout:       time.Minute,
		LookbackDelta: 5 * time.Minute,
	})
	answer := struct {
		Results []result `json:"results"`
	}{Results: []result{}}
	for _, q := range req.Queries {
		answer.Results = append(answer.Results, evaluate(engine, db, q))
	}
	return json.NewEncoder(os.Stdout).Encode(answer)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "promql-eval:", err)
		os.Exit(1)
	}
}
