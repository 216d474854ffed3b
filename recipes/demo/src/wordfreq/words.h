#ifndef WORDS_H
#define WORDS_H

#include <stdio.h>
#include <tally.h>

/* Add every word of `in` to `t`: maximal runs of ASCII letters, digits and
 * apostrophes, lowercased. 0 on success, -1 on a read error or out of memory. */
int count_words(FILE *in, tally *t);

#endif
