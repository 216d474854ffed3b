#include "words.h"

/* ASCII only, on purpose: the result must not depend on the locale. */
static int is_word_byte(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'';
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

int count_words(FILE *in, tally *t)
{
	char word[256];
	size_t len = 0;
	int c;
	while ((c = getc(in)) != EOF) {
		if (is_word_byte(c)) {
			/* Overlong words are cut, not split: the tail is dropped. */
			if (len < sizeof word)
				word[len++] = (char)lower(c);
			continue;
		}
		if (len && tally_add(t, word, len) != 0)
			return -1;
		len = 0;
	}
	if (len && tally_add(t, word, len) != 0)
		return -1;
	return ferror(in) ? -1 : 0;
}
