/* wordfreq: print the most frequent words of files (or stdin), by rank.
 *
 *   wordfreq [-n N] [FILE...]
 *
 * Output: one "COUNT WORD" line per word (at most N, default 10; 0 for all),
 * then "total T distinct D". Identical input gives identical output. */
#define _POSIX_C_SOURCE 200809L /* getopt under -std=c99 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tally.h>

#include "words.h"

static void print_entry(const char *word, size_t count, void *ctx)
{
	(void)ctx;
	printf("%7zu %s\n", count, word);
}

static int count_file(const char *path, tally *t)
{
	FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!in) {
		perror(path);
		return -1;
	}
	int rc = count_words(in, t);
	if (rc != 0)
		fprintf(stderr, "wordfreq: error reading %s\n", path);
	if (in != stdin)
		fclose(in);
	return rc;
}

int main(int argc, char **argv)
{
	size_t limit = 10;
	int opt;
	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n') {
			fprintf(stderr, "usage: wordfreq [-n N] [FILE...]\n");
			return 2;
		}
		limit = strtoul(optarg, NULL, 10);
	}
	tally *t = tally_new();
	if (!t)
		return 1;
	int rc = 0;
	if (optind == argc)
		rc = count_file("-", t);
	for (int i = optind; i < argc && rc == 0; i++)
		rc = count_file(argv[i], t);
	if (rc == 0 && tally_each(t, limit, print_entry, NULL) != 0)
		rc = -1;
	if (rc == 0)
		printf("total %zu distinct %zu\n", tally_total(t), tally_distinct(t));
	tally_free(t);
	return rc == 0 ? 0 : 1;
}
