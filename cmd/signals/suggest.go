package main

import "strings"

// suggest returns the candidate that typed most likely misspells, or ""
// if none is close: the nearest by edit distance, allowing one edit per
// three letters typed, else the one candidate that typed begins.
func suggest(typed string, candidates []string) string {
	best, bestDist := "", len([]rune(typed))/3+2
	for _, c := range candidates {
		if d := editDistance(typed, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" || typed == "" {
		return best
	}
	for _, c := range candidates {
		if strings.HasPrefix(c, typed) {
			if best != "" {
				return "" // ambiguous
			}
			best = c
		}
	}
	return best
}

// editDistance is the Damerau–Levenshtein distance between a and b (optimal
// string alignment): the insertions, deletions, substitutions and swaps of
// adjacent letters that turn one into the other.
func editDistance(a, b string) int {
	s, t := []rune(a), []rune(b)
	// d[i][j] is the distance between s[:i] and t[:j].
	d := make([][]int, len(s)+1)
	for i := range d {
		d[i] = make([]int, len(t)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(s); i++ {
		for j := 1; j <= len(t); j++ {
			cost := 1
			if s[i-1] == t[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && s[i-1] == t[j-2] && s[i-2] == t[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(s)][len(t)]
}

// didYouMean ends a message about a mistyped name with the suggestion s,
// if there is one.
func didYouMean(s string) string {
	if s == "" {
		return ""
	}
	return "; did you mean " + s + "?"
}
