#include "vulkan/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/error.h"
#include "shaders/push_constants.h"
#include "tandem_shaders.h"  // generated: the SPIR-V of every shader variant
#include "vulkan/check.h"
#include "vulkan/gpu_timer.h"
#include "vulkan/variant.h"

namespace tandem::vk {

namespace {

// A shader built with a subgroup variant (<name>_sg, see `tandem-variants` in the .comp) runs
// that variant where the device has subgroup arithmetic.

static_assert(sizeof(rms_norm_push) == 20 && sizeof(rope_push) == 24 && sizeof(matmul_push) == 28 &&
              sizeof(attention_push) == 32 && sizeof(kv_store_push) == 16 && sizeof(add_push) == 8 &&
              sizeof(matvec_push) == 60);

const op_row& row_of(kernel k) {
  for (int i = 0; i < n_ops; ++i)
    if (op_rows[i].k == k) return op_rows[i];
  throw error("vulkan: unknown kernel");
}

// A buffer handle as an integer for the hazard tracker (a pointer or a uint64_t, by platform).
uint64_t handle_id(VkBuffer b) {
  return (uint64_t)b;  // NOLINT: C cast, valid for either definition of the handle
}

const spv::blob* find_blob(const std::string& name) {
  for (const auto& b : spv::all)
    if (name == b.name) return &b;
  return nullptr;
}

}  // namespace

// ---- the op table's rows (op_table.h) ---------------------------------------------------------

const op_row op_rows[] = {
#define TANDEM_VK_OP_ROW(name, bindings, push, wg, typed, spec, use, writes) \
  {kernel::name, #name, bindings, sizeof(push), wg, typed, spec, use, writes},
    TANDEM_VK_OPS(TANDEM_VK_OP_ROW)
#undef TANDEM_VK_OP_ROW
};

// ---- pipeline_cache -------------------------------------------------------------------------

pipeline_cache::pipeline_cache(context& ctx, bool allow_subgroups, bool allow_push)
    : ctx_(ctx), flat_(static_cast<size_t>(n_ops) * k_types * k_specs * 2, nullptr) {
  auto env_on = [](const char* name) {
    const char* v = std::getenv(name);
    return v && std::string(v) == "1";
  };
  subgroups_ = allow_subgroups && ctx.caps().subgroup_arithmetic && !env_on("TANDEM_VK_NO_SUBGROUPS");
  if (allow_push && ctx.caps().push_descriptor && !env_on("TANDEM_VK_NO_PUSH_DESCRIPTORS"))
    push_ = reinterpret_cast<PFN_vkCmdPushDescriptorSetKHR>(
        fn.vkGetDeviceProcAddr(ctx.device(), "vkCmdPushDescriptorSetKHR"));
}

pipeline_cache::~pipeline_cache() {
  const VkDevice dev = ctx_.device();
  for (auto& [key, p] : cache_) {
    fn.vkDestroyPipeline(dev, p->pipe, nullptr);
    fn.vkDestroyPipelineLayout(dev, p->layout, nullptr);
  }
  for (auto& [n, l] : set_layouts_) fn.vkDestroyDescriptorSetLayout(dev, l, nullptr);
}

const pipeline& pipeline_cache::get(kernel k, dtype t, std::initializer_list<uint32_t> spec) {
  const auto ti = static_cast<size_t>(t);
  const size_t si = spec.size() == 0 ? 0 : spec.size() == 1 && *spec.begin() < k_specs - 1
                                               ? *spec.begin() + 1
                                               : k_specs;
  if (ti >= k_types || si >= k_specs) return build(k, std::string(), t, spec);
  const size_t u16 = loads16(t) ? 1 : 0;
  const pipeline*& slot = flat_[((static_cast<size_t>(k) * k_types + ti) * k_specs + si) * 2 + u16];
  if (!slot) slot = &build(k, std::string(), t, spec);
  return *slot;
}

bool pipeline_cache::loads16(dtype t) const {
  if (t != dtype::q4_0 && t != dtype::q8_0 && t != dtype::q6_k) return false;
  const std::string f = forced_variant("loads");
  if (f.empty()) return ctx_.caps().storage16;
  if (f == "u32") return false;
  if (f != "u16")
    throw error(fmt::format("TANDEM_VK_VARIANT: loads has no variant '{}' (u32, u16)", f));
  if (!ctx_.caps().storage16)
    throw error(fmt::format(
        "TANDEM_VK_VARIANT: loads=u16 needs storageBuffer16BitAccess and storageBuffer8BitAccess, "
        "which {} lacks; force loads=u32 instead",
        ctx_.info().name));
  return true;
}

const pipeline& pipeline_cache::get(kernel k, const std::string& variant, dtype t,
                                    std::initializer_list<uint32_t> spec) {
  return variant.empty() ? get(k, t, spec) : build(k, variant, t, spec);
}

const pipeline& pipeline_cache::build(kernel k, const std::string& variant, dtype t,
                                      std::initializer_list<uint32_t> spec) {
  const op_row& row = row_of(k);
  const uint32_t type_key = row.typed ? static_cast<uint32_t>(t) : 0;
  const bool u16 = row.typed && loads16(t);
  auto key = std::make_tuple(static_cast<uint32_t>(k), type_key, std::vector<uint32_t>(spec),
                             u16 ? variant + "|u16" : variant);
  if (auto it = cache_.find(key); it != cache_.end()) return *it->second;

  std::string name = row.name;
  if (!variant.empty()) {
    name += '_';
    name += variant;
  }
  if (row.typed) {  // (two appends: "_" + std::string trips GCC 12's -Wrestrict false positive)
    name += '_';
    name += dtype_name(t);
  }
  // The 16/8-bit-load build (<name>_u16[_sg]) where the shader has one (`storage16` in its
  // tandem-variants line), else the 32-bit one.
  const spv::blob* blob = nullptr;
  for (const std::string& n : u16 ? std::vector<std::string>{name + "_u16", name}
                                  : std::vector<std::string>{name}) {
    if (!blob && subgroups_) blob = find_blob(n + "_sg");
    if (!blob) blob = find_blob(n);
  }
  op_scope scope("create pipeline " + name);
  if (!blob)
    throw error(fmt::format("vulkan: no shader {} (type {} has no {} kernel)", name, dtype_name(t),
                            row.name));

  auto p = std::make_unique<pipeline>();
  p->bindings = row.bindings;
  p->push_size = row.push_size;
  p->wg = row.wg;
  p->name = blob->name;
  p->writes = row.writes;
  const VkDevice dev = ctx_.device();

  VkDescriptorSetLayout& sl = set_layouts_[row.bindings];
  if (!sl) {
    std::vector<VkDescriptorSetLayoutBinding> b(row.bindings);
    for (uint32_t i = 0; i < row.bindings; ++i)
      b[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo ci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    ci.bindingCount = row.bindings;
    ci.pBindings = b.data();
    if (push_) ci.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    VK_CHECK(fn.vkCreateDescriptorSetLayout(dev, &ci, nullptr, &sl));
  }
  p->set_layout = sl;

  VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, row.push_size};
  VkPipelineLayoutCreateInfo lci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  lci.setLayoutCount = 1;
  lci.pSetLayouts = &sl;
  lci.pushConstantRangeCount = 1;
  lci.pPushConstantRanges = &pcr;
  VK_CHECK(fn.vkCreatePipelineLayout(dev, &lci, nullptr, &p->layout));

  VkShaderModuleCreateInfo mci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  mci.codeSize = blob->bytes;
  mci.pCode = blob->code;
  VkShaderModule module = VK_NULL_HANDLE;
  VK_CHECK(fn.vkCreateShaderModule(dev, &mci, nullptr, &module));

  std::vector<uint32_t> values{row.wg};
  values.insert(values.end(), spec.begin(), spec.end());
  std::vector<VkSpecializationMapEntry> entries(values.size());
  for (uint32_t i = 0; i < values.size(); ++i) entries[i] = {i, i * 4, 4};
  VkSpecializationInfo si{static_cast<uint32_t>(entries.size()), entries.data(), values.size() * 4,
                          values.data()};
  VkComputePipelineCreateInfo pci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  pci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  pci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  pci.stage.module = module;
  pci.stage.pName = "main";
  pci.stage.pSpecializationInfo = &si;
  pci.layout = p->layout;
  const VkResult r = fn.vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &pci, nullptr, &p->pipe);
  fn.vkDestroyShaderModule(dev, module, nullptr);
  VK_CHECK(r);
  return *cache_.emplace(std::move(key), std::move(p)).first->second;
}

// ---- descriptor_allocator -------------------------------------------------------------------

descriptor_allocator::~descriptor_allocator() {
  for (auto p : pools_) fn.vkDestroyDescriptorPool(ctx_.device(), p, nullptr);
}

VkDescriptorPool descriptor_allocator::new_pool() {
  constexpr uint32_t k_sets = 256;
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, k_sets * 4};
  VkDescriptorPoolCreateInfo ci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  ci.maxSets = k_sets;
  ci.poolSizeCount = 1;
  ci.pPoolSizes = &size;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  VK_CHECK(fn.vkCreateDescriptorPool(ctx_.device(), &ci, nullptr, &pool));
  pools_.push_back(pool);
  return pool;
}

VkDescriptorSet descriptor_allocator::allocate(VkDescriptorSetLayout layout) {
  for (;;) {
    if (current_ == pools_.size()) new_pool();
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = pools_[current_];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    const VkResult r = fn.vkAllocateDescriptorSets(ctx_.device(), &ai, &set);
    if (r == VK_SUCCESS) return set;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) VK_CHECK(r);
    ++current_;  // this pool is full: move on to the next
  }
}

void descriptor_allocator::reset() {
  for (auto p : pools_) VK_CHECK(fn.vkResetDescriptorPool(ctx_.device(), p, 0));
  current_ = 0;
}

// ---- recorder -------------------------------------------------------------------------------

void recorder::dispatch_raw(const pipeline& p, uint32_t gx, uint32_t gy, uint32_t gz,
                            const void* push, size_t push_size,
                            std::initializer_list<buffer_range> bufs) {
  if (push_size != p.push_size || bufs.size() != p.bindings || bufs.size() > 16)
    throw error(
        fmt::format("vulkan: dispatch of {} with {} bytes of push constants and {} "
                    "buffers (expects {} and {})",
                    p.name, push_size, bufs.size(), p.push_size, p.bindings));
  last_cost_ = next_cost_;
  next_cost_ = {};
  if (gx == 0 || gy == 0 || gz == 0) return;
  const auto& caps = pipes_.ctx().caps();
  if (gx > caps.max_groups[0] || gy > caps.max_groups[1] || gz > caps.max_groups[2])
    throw error(
        fmt::format("vulkan: dispatch of {} with {}x{}x{} workgroups exceeds the device "
                    "limit",
                    p.name, gx, gy, gz));
  // (the op table's widest row, matvec_rope, binds 15; more is refused above)
  VkDescriptorBufferInfo infos[16];
  VkWriteDescriptorSet writes[16];
  tracked_access access[17];  // and an indirect dispatch's arguments
  uint32_t i = 0;
  for (const auto& b : bufs) {
    if (b.size > caps.max_storage_range)
      throw error(
          fmt::format("vulkan: {} binds {} MiB at binding {}, over the device's "
                      "maxStorageBufferRange ({} MiB)",
                      p.name, b.size >> 20, i, caps.max_storage_range >> 20));
    // Bind whole words: shaders read F16 and block data as 32-bit words.
    infos[i] = {b.buf, b.offset, std::max<VkDeviceSize>(4, (b.size + 3) / 4 * 4)};
    access[i] = {handle_id(b.buf), b.offset, b.offset + infos[i].range, ((p.writes >> i) & 1) != 0};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    ++i;
  }
  uint32_t n_access = i;
  if (indirect_)  // the group counts: read by the indirect-command stage
    access[n_access++] = {handle_id(indirect_->buf), indirect_->offset, indirect_->offset + 12,
                          false};
  order(access, n_access);
  const int tq = timer_ ? timer_->begin(cb_) : -1;
  fn.vkCmdBindPipeline(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipe);
  if (pipes_.push_descriptors()) {
    pipes_.push_fn()(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, i, writes);
  } else {
    const VkDescriptorSet set = desc_.allocate(p.set_layout);
    for (uint32_t j = 0; j < i; ++j) writes[j].dstSet = set;
    fn.vkUpdateDescriptorSets(pipes_.ctx().device(), i, writes, 0, nullptr);
    fn.vkCmdBindDescriptorSets(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0,
                               nullptr);
  }
  fn.vkCmdPushConstants(cb_, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p.push_size, push);
  if (indirect_)
    fn.vkCmdDispatchIndirect(cb_, indirect_->buf, indirect_->offset);
  else
    fn.vkCmdDispatch(cb_, gx, gy, gz);
  if (counts_) ++counts_->dispatches, ++counts_->recorded;
  if (tq >= 0) timer_->end(cb_, tq, p.name, last_cost_.bytes, last_cost_.flops);
}

// A barrier before work with these accesses where they overlap unordered earlier work (always,
// with per-dispatch timing: each kernel is timed alone).
void recorder::order(const tracked_access* a, size_t n) {
  const std::span<const tracked_access> v(a, n);
  if (!hazards_ || hazards_->conflicts(v)) {
    barrier_raw(false);
    if (counts_) ++counts_->barriers;
    if (hazards_) hazards_->clear();
    if (log_) log_->barrier = true;
  } else if (timer_ && !hazards_->empty()) {
    // Not a barrier the work needs: neither counted nor taken off the tracker, so that the
    // counts of a timed run are those of an untimed one.
    barrier_raw(false);
  }
  if (log_ && !log_->barrier) log_->head.insert(log_->head.end(), v.begin(), v.end());
  if (hazards_) hazards_->add(v);
}

void recorder::barrier() {
  barrier_raw(true);
  if (counts_) ++counts_->barriers;
  if (hazards_) hazards_->clear();
  if (log_) log_->barrier = true;
}

void recorder::update(const buffer_range& dst, const void* data, VkDeviceSize n) {
  if (n == 0 || n % 4 != 0 || n > 65536 || dst.offset % 4 != 0)
    throw std::logic_error("recorder::update: the size and offset must be multiples of 4");
  const tracked_access a{handle_id(dst.buf), dst.offset, dst.offset + n, true};
  order(&a, 1);
  fn.vkCmdUpdateBuffer(cb_, dst.buf, dst.offset, n, data);
}

void recorder::execute(const recorded_block& b, bool just_recorded) {
  if (!hazards_ || hazards_->conflicts(b.head)) {
    barrier_raw(false);
    if (counts_) ++counts_->barriers;
    if (hazards_) hazards_->clear();
    if (log_) log_->barrier = true;
  }
  fn.vkCmdExecuteCommands(cb_, 1, &b.cb);
  if (counts_) {
    counts_->dispatches += b.counts.dispatches;
    counts_->barriers += b.counts.barriers;
    if (just_recorded) counts_->recorded += b.counts.recorded;
  }
  if (hazards_) {
    if (b.has_barrier) hazards_->clear();
    hazards_->add(b.tail);
  }
}

// Compute and transfer writes before it visible to compute and transfer work after it; with
// host, to the host too (before it reads what the queue wrote).
void recorder::barrier_raw(bool host) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  // (Indirect dispatches read their group counts in the draw-indirect stage.)
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                     VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                     VK_ACCESS_INDIRECT_COMMAND_READ_BIT | (host ? VK_ACCESS_HOST_READ_BIT : 0);
  const VkPipelineStageFlags stages =
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  fn.vkCmdPipelineBarrier(cb_, stages,
                          stages | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT |
                              (host ? VK_PIPELINE_STAGE_HOST_BIT : 0),
                          0, 1, &mb, 0, nullptr, 0, nullptr);
}

void recorder::copy(const buffer_range& src, const buffer_range& dst, VkDeviceSize n) {
  if (n == 0) return;
  const tracked_access a[2] = {{handle_id(src.buf), src.offset, src.offset + n, false},
                               {handle_id(dst.buf), dst.offset, dst.offset + n, true}};
  order(a, 2);
  VkBufferCopy c{src.offset, dst.offset, n};
  fn.vkCmdCopyBuffer(cb_, src.buf, dst.buf, 1, &c);
}

void recorder::split_groups(uint64_t n, uint32_t* gx, uint32_t* gy) const {
  const uint64_t max_x = pipes_.ctx().caps().max_groups[0];
  if (n <= max_x) {
    *gx = static_cast<uint32_t>(std::max<uint64_t>(n, 1));
    *gy = 1;
    return;
  }
  *gy = static_cast<uint32_t>((n + max_x - 1) / max_x);
  *gx = static_cast<uint32_t>((n + *gy - 1) / *gy);
}

// ---- command_stream -------------------------------------------------------------------------

command_stream::command_stream(pipeline_cache& pipes, int n_frames)
    : pipes_(pipes), ctx_(pipes.ctx()) {
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx_.compute().family;
  VK_CHECK(fn.vkCreateCommandPool(ctx_.device(), &pci, nullptr, &pool_));
  frames_.resize(static_cast<size_t>(std::max(1, n_frames)));
  for (auto& f : frames_) {
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    VK_CHECK(fn.vkAllocateCommandBuffers(ctx_.device(), &ai, &f.cb));
    f.desc = std::make_unique<descriptor_allocator>(ctx_);
    f.rec = std::make_unique<recorder>(pipes_, *f.desc, f.cb, &counts_, &hazards_);
  }
}

command_stream::~command_stream() {
  try {
    finish();
  } catch (...) {  // a destructor must not throw; the device is lost anyway
  }
  frames_.clear();
  if (pool_) fn.vkDestroyCommandPool(ctx_.device(), pool_, nullptr);
}

recorder& command_stream::begin() {
  if (open_ >= 0) throw error("vulkan: command_stream::begin while a frame is open");
  frame& f = frames_[next_];
  ctx_.wait(ctx_.compute(), f.value);
  f.desc->reset();
  VK_CHECK(fn.vkResetCommandBuffer(f.cb, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  VK_CHECK(fn.vkBeginCommandBuffer(f.cb, &bi));
  // No barrier here: the hazard tracker (shared by the frames) carries over what the frames
  // submitted before left unordered, and the first dispatch that touches it waits for it.
  open_ = static_cast<int>(next_);
  return *f.rec;
}

uint64_t command_stream::submit(std::initializer_list<timeline_wait> waits, bool host_reads) {
  if (open_ < 0) throw error("vulkan: command_stream::submit without begin");
  frame& f = frames_[static_cast<size_t>(open_)];
  open_ = -1;
  if (host_reads && !hazards_.empty()) f.rec->barrier();  // results visible to the host
  VK_CHECK(fn.vkEndCommandBuffer(f.cb));
  f.value = ctx_.submit(ctx_.compute(), f.cb, waits);
  ++counts_.submits;
  next_ = (next_ + 1) % frames_.size();
  return f.value;
}

void command_stream::wait(uint64_t value) {
  ctx_.wait(ctx_.compute(), value);
}

void command_stream::finish() {
  for (const auto& f : frames_) ctx_.wait(ctx_.compute(), f.value);
}

}  // namespace tandem::vk
