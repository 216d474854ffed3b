/* libtally: count occurrences of words and list them by rank.
 *
 * Ranking order is total and independent of insertion order: descending count,
 * then ascending byte order of the word. So output built on it is reproducible. */
#ifndef TALLY_H
#define TALLY_H

#include <stddef.h>

#define TALLY_VERSION "1.0.0"

typedef struct tally tally;

/* A new, empty tally, or NULL when out of memory. */
tally *tally_new(void);
void tally_free(tally *t);

/* Count one occurrence of the `len` bytes at `word`. 0 on success, -1 when out of memory. */
int tally_add(tally *t, const char *word, size_t len);

/* Occurrences of the NUL-terminated `word` (0 if never added). */
size_t tally_count(const tally *t, const char *word);
/* Number of different words, and of words added in total. */
size_t tally_distinct(const tally *t);
size_t tally_total(const tally *t);

/* Call `fn` for each word in ranking order, at most `limit` times (0: no limit).
 * 0 on success, -1 when out of memory. */
typedef void tally_fn(const char *word, size_t count, void *ctx);
int tally_each(const tally *t, size_t limit, tally_fn *fn, void *ctx);

/* TALLY_VERSION of the library actually loaded. */
const char *tally_version(void);

#endif
