// caffe_shim: the small C ABI between the Rust worker and BVLC Caffe 1.0 (caffe::Net<float>).
// Rules: no C++ exception crosses this boundary (every entry point catches everything); models arrive as
// bytes, never as paths; errors are written into caller-provided buffers. A glog FATAL (CHECK failure) cannot
// be turned into a return value (glog aborts after the failure function returns), so it is delivered to the
// fatal hook installed with cs_init, which must not return.
#pragma once
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cs_net cs_net;
// Called with the FATAL message (not NUL-terminated) when a CHECK fails; must not return.
typedef void (*cs_fatal_hook)(const char* msg, size_t len);

// Initialise glog (stderr only, never log files, minimum severity `min_log_level`: 0 INFO .. 3 FATAL),
// Caffe's CPU mode, and the fatal hook. Returns 0 on success.
int cs_init(int min_log_level, cs_fatal_hook hook);
// Caffe's version string, e.g. "1.0.0".
const char* cs_caffe_version(void);

// Build a net (phase TEST) from NetParameter bytes: text format if `net_is_text`, else binary protobuf.
// Weights (binary NetParameter, may be NULL/0 for none) are copied in by layer name like CopyTrainedLayersFrom.
// Returns NULL on error with a message in err.
cs_net* cs_net_create(const uint8_t* net, size_t net_len, int net_is_text, const uint8_t* weights,
                      size_t weights_len, char* err, size_t err_len);
void cs_net_destroy(cs_net* net);

int cs_net_num_inputs(const cs_net* net);
int cs_net_num_outputs(const cs_net* net);
// Name of input/output i (NUL-terminated, owned by the net), NULL if out of range.
const char* cs_net_input_name(const cs_net* net, int i);
const char* cs_net_output_name(const cs_net* net, int i);
// Shape of a named blob: writes up to max_axes dims, returns the number of axes, or -1 if no such blob.
int cs_net_blob_shape(const cs_net* net, const char* name, int* dims, int max_axes);
// Reshape the named *input* blob to dims and copy `count` floats into it. Returns 0 or -1 (message in err).
int cs_net_set_input(cs_net* net, const char* name, const int* dims, int num_axes, const float* data, size_t count,
                     char* err, size_t err_len);
// Reshape the whole net to the current input shapes and run Forward. Returns 0 or -1 (message in err).
int cs_net_forward(cs_net* net, char* err, size_t err_len);
// Copy the named blob's data (exactly `count` floats, which must equal the blob's count). Returns 0 or -1.
int cs_net_blob_data(const cs_net* net, const char* name, float* out, size_t count);

#ifdef __cplusplus
}
#endif
