// Package browsertest tests the dashboard in a real headless Chromium,
// driven by chromedp, against real PostgreSQL and Redis. It is a module of
// its own so that the core module does not depend on chromedp.
//
// Its test needs Chromium: Debian's chromium package (apt-get install
// chromium), or the browser at $SIGNALS_TEST_CHROMIUM. Without one it
// fails, saying so. Run it with -screenshots to write the pages'
// screenshots under the repository's docs/ directory.
package browsertest
