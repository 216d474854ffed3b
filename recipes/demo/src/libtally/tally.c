/* Words live in an array kept sorted by bytes, so lookups are binary searches
 * and no hash function (or seed) can make two runs differ. */
#include "tally.h"

#include <stdlib.h>
#include <string.h>

struct entry {
	char *word;
	size_t count;
};

struct tally {
	struct entry *entries;
	size_t len, cap, total;
};

tally *tally_new(void)
{
	return calloc(1, sizeof(tally));
}

void tally_free(tally *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->len; i++)
		free(t->entries[i].word);
	free(t->entries);
	free(t);
}

/* Index of `word` if present (*found = 1), else where it would be inserted. */
static size_t find(const tally *t, const char *word, size_t len, int *found)
{
	size_t lo = 0, hi = t->len;
	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *w = t->entries[mid].word;
		size_t wlen = strlen(w);
		int c = memcmp(w, word, wlen < len ? wlen : len);
		if (c == 0)
			c = (wlen > len) - (wlen < len);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int grow(tally *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct entry *e = realloc(t->entries, cap * sizeof *e);
	if (!e)
		return -1;
	t->entries = e;
	t->cap = cap;
	return 0;
}

int tally_add(tally *t, const char *word, size_t len)
{
	int found;
	size_t at = find(t, word, len, &found);
	if (!found) {
		char *copy = malloc(len + 1);
		if (!copy || (t->len == t->cap && grow(t) != 0)) {
			free(copy);
			return -1;
		}
		memcpy(copy, word, len);
		copy[len] = '\0';
		memmove(&t->entries[at + 1], &t->entries[at], (t->len - at) * sizeof *t->entries);
		t->entries[at] = (struct entry){ copy, 0 };
		t->len++;
	}
	t->entries[at].count++;
	t->total++;
	return 0;
}

size_t tally_count(const tally *t, const char *word)
{
	int found;
	size_t at = find(t, word, strlen(word), &found);
	return found ? t->entries[at].count : 0;
}

size_t tally_distinct(const tally *t)
{
	return t->len;
}

size_t tally_total(const tally *t)
{
	return t->total;
}

static int by_rank(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a;
	const struct entry *y = *(const struct entry *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->word, y->word);
}

int tally_each(const tally *t, size_t limit, tally_fn *fn, void *ctx)
{
	const struct entry **order = malloc((t->len ? t->len : 1) * sizeof *order);
	if (!order)
		return -1;
	for (size_t i = 0; i < t->len; i++)
		order[i] = &t->entries[i];
	qsort(order, t->len, sizeof *order, by_rank);
	size_t n = limit && limit < t->len ? limit : t->len;
	for (size_t i = 0; i < n; i++)
		fn(order[i]->word, order[i]->count, ctx);
	free(order);
	return 0;
}

const char *tally_version(void)
{
	return TALLY_VERSION;
}
