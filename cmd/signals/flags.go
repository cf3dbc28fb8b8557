package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// flagSet is a command's flags, spelled --name in its help and its errors
// as in the usage text, and parsed so that a mistake is said once, with a
// suggestion or an example, rather than followed by every flag there is.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	stdout   io.Writer
}

// newFlagSet returns the flag set of the command name ("dead list"), whose
// help, printed to stdout on -h, starts with the usage line synopsis.
func newFlagSet(name, synopsis string, stdout io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package would print its own message and every flag's
	// default on a mistake; parse says what went wrong instead, and help
	// prints the flags as --name.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, stdout: stdout}
}

// durationVar defines a flag for a time.Duration whose error on a bad value
// gives examples.
func (fs *flagSet) durationVar(p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationFlag)(p), name, usage)
}

// intVar defines a flag for an int whose error on a bad value gives an
// example.
func (fs *flagSet) intVar(p *int, name string, value int, usage string) {
	*p = value
	fs.Var((*intFlag)(p), name, usage)
}

// parse parses args, allowing flags after the positional arguments
// (signals dead show ID --json), and returns the positional ones. On -h it
// prints the help and returns flag.ErrHelp; on a mistake, a usageError
// that says what to type instead.
func (fs *flagSet) parse(args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.help()
				return nil, err
			}
			return nil, fs.explain(err)
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// help prints the synopsis, every flag as --name, and the exit codes.
func (fs *flagSet) help() {
	w := fs.stdout
	fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", fs.synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if def := shownDefault(f); def != "" {
			fmt.Fprintf(w, " (default %s)", def)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprint(w, "\nExit codes: 0 success, 1 failed (status: unhealthy), 2 usage, 3 could not check\n(unreachable server, unmigrated schema). Run 'signals -h' for more.\n")
}

// shownDefault is f's default as help shows it: nothing for a zero value,
// a string quoted.
func shownDefault(f *flag.Flag) string {
	switch f.DefValue {
	case "", "0", "0s", "false":
		return ""
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if _, isString := g.Get().(string); isString {
			return strconv.Quote(f.DefValue)
		}
	}
	return f.DefValue
}

// The flag package's messages for a command line it refuses.
var (
	undefinedFlag = regexp.MustCompile(`^flag provided but not defined: -(.*)$`)
	invalidValue  = regexp.MustCompile(`^invalid value ".*" for flag -([^:]*): (.*)$`)
	invalidBool   = regexp.MustCompile(`^invalid boolean value "(.*)" for -([^:]*): `)
	missingValue  = regexp.MustCompile(`^flag needs an argument: -(.*)$`)
)

// explain rewrites the flag package's err into a usageError that spells
// flags --name, suggests the flag a mistyped one may have meant, and gives
// an example of a valid value.
func (fs *flagSet) explain(err error) error {
	msg := err.Error()
	if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		hint := suggest(m[1], names)
		if hint != "" {
			hint = "--" + hint
		}
		return usagef("unknown flag --%s%s", m[1], didYouMean(hint))
	}
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		return usagef("--%s: %s", m[1], m[2])
	}
	if m := invalidBool.FindStringSubmatch(msg); m != nil {
		return usagef("--%s is a switch: give --%s, or --%s=false, not --%s=%s", m[2], m[2], m[2], m[2], m[1])
	}
	if m := missingValue.FindStringSubmatch(msg); m != nil {
		arg, _ := flag.UnquoteUsage(fs.Lookup(m[1]))
		return usagef("--%s needs a value: --%s %s", m[1], m[1], arg)
	}
	return usagef("%s", msg)
}

// durationFlag is a time.Duration flag whose error gives examples, and
// whose default in help reads 1m rather than 1m0s.
type durationFlag time.Duration

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a Go duration such as 90s, 15m or 72h", s)
	}
	*d = durationFlag(v)
	return nil
}

func (d *durationFlag) String() string {
	s := time.Duration(*d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (d *durationFlag) Get() any { return time.Duration(*d) }

// intFlag is an int flag whose error gives an example.
type intFlag int

func (n *intFlag) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("invalid number %q: use a whole number such as 100", s)
	}
	*n = intFlag(v)
	return nil
}

func (n *intFlag) String() string { return strconv.Itoa(int(*n)) }

func (n *intFlag) Get() any { return int(*n) }
