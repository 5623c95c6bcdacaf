// SparseAttentionUtils: padding to whole blocks and back, position-embedding extension, config and
// tokenizer updates.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dense_reference.h"
#include "sparse_attention/sparse_attention_utils.h"

namespace ds {
namespace {

using Utils = SparseAttentionUtils;

TEST(SparseAttentionUtils, PadToBlockSizePadsEveryInputLikeDeepSpeed) {
  torch::Tensor ids = torch::arange(1, 27, torch::kLong).view({2, 13});
  torch::Tensor mask = torch::ones({2, 13}, torch::kLong);
  torch::Tensor types = torch::ones({2, 13}, torch::kLong);
  torch::Tensor pos = torch::arange(13, torch::kLong).repeat({2, 1});
  Utils::Padded p = Utils::pad_to_block_size(16, ids, mask, types, pos, {}, 0);
  EXPECT_EQ(p.pad_len, 3);
  EXPECT_EQ(p.input_ids.sizes(), at::IntArrayRef({2, 16}));
  EXPECT_TRUE(p.input_ids.narrow(1, 0, 13).equal(ids));
  EXPECT_TRUE(p.input_ids.narrow(1, 13, 3).eq(0).all().item<bool>());
  EXPECT_TRUE(p.attention_mask.narrow(1, 13, 3).eq(0).all().item<bool>());
  EXPECT_TRUE(p.token_type_ids.narrow(1, 13, 3).eq(0).all().item<bool>());
  EXPECT_TRUE(p.position_ids.narrow(1, 13, 3).eq(0).all().item<bool>());
  EXPECT_FALSE(p.inputs_embeds.defined());

  // inputs_embeds are extended with the embeddings of pad tokens; the pad id is used as given.
  torch::nn::Embedding emb(30, 4);
  torch::Tensor embeds = emb->forward(ids);
  Utils::Padded e = Utils::pad_to_block_size(8, {}, mask, {}, {}, embeds, 7,
                                             [&](const torch::Tensor& x) { return emb->forward(x); });
  EXPECT_EQ(e.pad_len, 3);
  ASSERT_EQ(e.inputs_embeds.sizes(), at::IntArrayRef({2, 16, 4}));
  EXPECT_TRUE(e.inputs_embeds.narrow(1, 13, 1)[0][0].equal(emb->weight[7]));
  EXPECT_FALSE(e.token_type_ids.defined());  // DeepSpeed would crash on None here
  DS_EXPECT_THROW_MSG(Utils::pad_to_block_size(8, {}, mask, {}, {}, embeds, 7), c10::ValueError,
                      "model_embeddings must be given");

  Utils::Padded none = Utils::pad_to_block_size(13, ids, mask, types, pos, {}, 0);
  EXPECT_EQ(none.pad_len, 0);
  EXPECT_TRUE(none.input_ids.equal(ids));

  torch::Tensor seq = torch::randn({2, 16, 5});
  EXPECT_TRUE(Utils::unpad_sequence_output(3, seq).equal(seq.narrow(1, 0, 13)));
  EXPECT_TRUE(Utils::unpad_sequence_output(0, seq).equal(seq));
}

TEST(SparseAttentionUtils, ExtendPositionEmbeddingBert) {
  torch::Tensor w = torch::randn({4, 3});
  torch::Tensor ext = Utils::extend_position_embedding(w, 10);
  ASSERT_EQ(ext.sizes(), at::IntArrayRef({10, 3}));
  // DeepSpeed's weight.repeat(max_position // orig, 1) for the first 8 rows, then the tiling goes on.
  EXPECT_TRUE(ext.narrow(0, 0, 8).equal(w.repeat({2, 1})));
  EXPECT_TRUE(ext.narrow(0, 8, 2).equal(w.narrow(0, 0, 2)));
  DS_EXPECT_THROW_MSG(Utils::extend_position_embedding(w, 4), c10::ValueError,
                      "max_position 4 must be larger than the current number of positions 4");

  torch::nn::Embedding emb(4, 3);
  torch::Tensor before = emb->weight.detach().clone();
  const auto* param_impl = emb->weight.unsafeGetTensorImpl();
  EXPECT_EQ(Utils::extend_position_embedding(emb, 12), 12);
  EXPECT_EQ(emb->weight.unsafeGetTensorImpl(), param_impl);  // same parameter, new data
  EXPECT_EQ(emb->weight.sizes(), at::IntArrayRef({12, 3}));
  EXPECT_EQ(emb->options.num_embeddings(), 12);
  EXPECT_TRUE(emb->forward(torch::tensor({11}, torch::kLong))[0].equal(before[3]));
  EXPECT_TRUE(emb->weight.requires_grad());
}

TEST(SparseAttentionUtils, ExtendPositionEmbeddingRoberta) {
  torch::Tensor w = torch::randn({6, 2});  // 2 offset rows + 4 positions
  torch::Tensor ext = Utils::extend_position_embedding(w, 10, Utils::ModelType::Roberta);
  ASSERT_EQ(ext.sizes(), at::IntArrayRef({12, 2}));
  EXPECT_TRUE(ext.narrow(0, 0, 2).equal(w.narrow(0, 0, 2)));  // DeepSpeed leaves these uninitialised
  for (int64_t i = 0; i < 10; ++i) EXPECT_TRUE(ext[2 + i].equal(w[2 + i % 4])) << i;
  torch::nn::Embedding emb(6, 2);
  EXPECT_EQ(Utils::extend_position_embedding(emb, 10, Utils::ModelType::Roberta), 12);
  DS_EXPECT_THROW_MSG(Utils::extend_position_embedding(w, 3, Utils::ModelType::Roberta), c10::ValueError,
                      "must be larger than the current number of positions 4");
}

TEST(SparseAttentionUtils, UpdateMaxPositionAndTokenizer) {
  struct ModelConfig {
    int64_t max_position_embeddings = 512;
  } bert, roberta;
  Utils::update_max_position(bert, 4096);
  Utils::update_max_position(roberta, 4096, Utils::ModelType::Roberta);
  EXPECT_EQ(bert.max_position_embeddings, 4096);
  EXPECT_EQ(roberta.max_position_embeddings, 4098);
  struct Tokenizer {
    int64_t model_max_length = 512;
  } tok;
  Utils::update_tokenizer_model_max_length(tok, 4096);
  EXPECT_EQ(tok.model_max_length, 4096);
}

}  // namespace
}  // namespace ds
