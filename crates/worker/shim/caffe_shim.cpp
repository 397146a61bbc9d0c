// caffe_shim.cpp: see caffe_shim.h for the contract.
#include "caffe_shim.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <caffe/caffe.hpp>
#include <caffe/util/upgrade_proto.hpp>
#include <glog/logging.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

struct cs_net {
  std::unique_ptr<caffe::Net<float>> net;
};

namespace {

cs_fatal_hook g_fatal_hook = nullptr;

// Keeps the text of the most recent FATAL message so the failure function can hand it over.
// glog calls sinks from SendToLog() before it calls the failure function.
class FatalCapture : public google::LogSink {
 public:
  void send(google::LogSeverity severity, const char* /*full_filename*/, const char* base_filename, int line,
            const struct ::tm* /*tm_time*/, const char* message, size_t message_len) override {
    if (severity != google::GLOG_FATAL) return;
    std::snprintf(buf_, sizeof(buf_), "%s:%d: %.*s", base_filename, line,
                  static_cast<int>(std::min<size_t>(message_len, sizeof(buf_) - 64)), message);
    len_ = std::strlen(buf_);
  }
  const char* text() const { return buf_; }
  size_t len() const { return len_; }

 private:
  char buf_[4096] = {0};
  size_t len_ = 0;
};

FatalCapture* g_capture = nullptr;

void on_glog_failure() {
  if (g_fatal_hook != nullptr && g_capture != nullptr) {
    g_fatal_hook(g_capture->text(), g_capture->len());
  }
  // The hook must not return; if there is none (or it did), end the process the way a CHECK would.
  std::abort();
}

void set_err(char* err, size_t err_len, const std::string& msg) {
  if (err == nullptr || err_len == 0) return;
  size_t n = std::min(msg.size(), err_len - 1);
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

bool parse_binary(const uint8_t* data, size_t len, google::protobuf::Message* msg) {
  if (len > static_cast<size_t>(INT_MAX)) return false;
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(len));
  in.SetTotalBytesLimit(static_cast<int>(len));
  return msg->ParseFromCodedStream(&in) && in.ConsumedEntireMessage();
}

// Keeps the first text-format parse error ("line:column: message") instead of logging it.
class TextErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, int, const std::string&) override {}
  std::string first;
};

const std::string& blob_name_at(const caffe::Net<float>& net, int blob_index) {
  return net.blob_names()[blob_index];
}

}  // namespace

extern "C" {

int cs_init(int min_log_level, cs_fatal_hook hook) {
  try {
    FLAGS_logtostderr = true;  // never write log files into $TMPDIR
    FLAGS_alsologtostderr = false;
    FLAGS_minloglevel = min_log_level;
    FLAGS_stderrthreshold = 0;
    // Function-local static initialisation is thread-safe (C++11), so concurrent callers init glog once.
    static const bool initialised = [] {
      google::InitGoogleLogging("caffe-sandbox-worker");
      g_capture = new FatalCapture();
      google::AddLogSink(g_capture);
      google::InstallFailureFunction(&on_glog_failure);
      return true;
    }();
    (void)initialised;
    g_fatal_hook = hook;
    caffe::Caffe::set_mode(caffe::Caffe::CPU);
    return 0;
  } catch (...) {
    return -1;
  }
}

const char* cs_caffe_version(void) {
#ifdef CAFFE_VERSION
#define CS_STR2(x) #x
#define CS_STR(x) CS_STR2(x)
  return CS_STR(CAFFE_VERSION);
#else
  return "1.0.0";
#endif
}

cs_net* cs_net_create(const uint8_t* net_bytes, size_t net_len, int net_is_text, const uint8_t* weights,
                      size_t weights_len, char* err, size_t err_len) {
  try {
    caffe::NetParameter param;
    if (net_is_text) {
      std::string text(reinterpret_cast<const char*>(net_bytes), net_len);
      TextErrors errors;
      google::protobuf::TextFormat::Parser parser;
      parser.RecordErrorsTo(&errors);
      if (!parser.ParseFromString(text, &param)) {
        set_err(err, err_len, "net: not a valid NetParameter in protobuf text format: " + errors.first);
        return nullptr;
      }
    } else if (!parse_binary(net_bytes, net_len, &param)) {
      set_err(err, err_len, "net: not a valid NetParameter in binary protobuf format");
      return nullptr;
    }
    caffe::UpgradeNetAsNeeded("<net>", &param);
    param.mutable_state()->set_phase(caffe::TEST);
    auto out = std::make_unique<cs_net>();
    out->net = std::make_unique<caffe::Net<float>>(param);
    if (weights != nullptr && weights_len > 0) {
      caffe::NetParameter trained;
      if (!parse_binary(weights, weights_len, &trained)) {
        set_err(err, err_len, "weights: not a valid binary NetParameter (.caffemodel)");
        return nullptr;
      }
      caffe::UpgradeNetAsNeeded("<weights>", &trained);
      out->net->CopyTrainedLayersFrom(trained);
    }
    return out.release();
  } catch (const std::exception& e) {
    set_err(err, err_len, std::string("caffe threw: ") + e.what());
  } catch (...) {
    set_err(err, err_len, "caffe threw an unknown exception");
  }
  return nullptr;
}

void cs_net_destroy(cs_net* net) {
  try {
    delete net;
  } catch (...) {
  }
}

int cs_net_num_inputs(const cs_net* net) { return static_cast<int>(net->net->input_blob_indices().size()); }
int cs_net_num_outputs(const cs_net* net) { return static_cast<int>(net->net->output_blob_indices().size()); }

const char* cs_net_input_name(const cs_net* net, int i) {
  const auto& idx = net->net->input_blob_indices();
  if (i < 0 || static_cast<size_t>(i) >= idx.size()) return nullptr;
  return blob_name_at(*net->net, idx[i]).c_str();
}

const char* cs_net_output_name(const cs_net* net, int i) {
  const auto& idx = net->net->output_blob_indices();
  if (i < 0 || static_cast<size_t>(i) >= idx.size()) return nullptr;
  return blob_name_at(*net->net, idx[i]).c_str();
}

int cs_net_blob_shape(const cs_net* net, const char* name, int* dims, int max_axes) {
  try {
    if (!net->net->has_blob(name)) return -1;
    const auto blob = net->net->blob_by_name(name);
    const auto& shape = blob->shape();
    for (int a = 0; a < static_cast<int>(shape.size()) && a < max_axes; ++a) dims[a] = shape[a];
    return static_cast<int>(shape.size());
  } catch (...) {
    return -1;
  }
}

int cs_net_set_input(cs_net* net, const char* name, const int* dims, int num_axes, const float* data, size_t count,
                     char* err, size_t err_len) {
  try {
    caffe::Blob<float>* target = nullptr;
    for (int idx : net->net->input_blob_indices()) {
      if (blob_name_at(*net->net, idx) == name) target = net->net->blobs()[idx].get();
    }
    if (target == nullptr) {
      set_err(err, err_len, std::string("no input blob named '") + name + "'");
      return -1;
    }
    std::vector<int> shape(dims, dims + num_axes);
    size_t expect = 1;
    for (int d : shape) {
      if (d <= 0) {
        set_err(err, err_len, "input dims must be positive");
        return -1;
      }
      expect *= static_cast<size_t>(d);
    }
    if (expect != count) {
      set_err(err, err_len, "input data length does not match its shape");
      return -1;
    }
    target->Reshape(shape);
    std::memcpy(target->mutable_cpu_data(), data, count * sizeof(float));
    return 0;
  } catch (const std::exception& e) {
    set_err(err, err_len, std::string("caffe threw: ") + e.what());
  } catch (...) {
    set_err(err, err_len, "caffe threw an unknown exception");
  }
  return -1;
}

int cs_net_forward(cs_net* net, char* err, size_t err_len) {
  try {
    net->net->Reshape();
    net->net->Forward();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, err_len, std::string("caffe threw: ") + e.what());
  } catch (...) {
    set_err(err, err_len, "caffe threw an unknown exception");
  }
  return -1;
}

int cs_net_blob_data(const cs_net* net, const char* name, float* out, size_t count) {
  try {
    if (!net->net->has_blob(name)) return -1;
    const auto blob = net->net->blob_by_name(name);
    if (static_cast<size_t>(blob->count()) != count) return -1;
    std::memcpy(out, blob->cpu_data(), count * sizeof(float));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
