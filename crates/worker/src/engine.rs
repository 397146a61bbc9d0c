//! Safe Rust wrapper over the C++ shim (`shim/caffe_shim.h`): a `caffe::Net<float>` built from bytes.
//!
//! Every call goes through the shim's C ABI, which catches all C++ exceptions. A glog CHECK failure cannot
//! return: it reaches the fatal hook given to [`init`], which must end the process.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;

/// Most axes a blob may have (Caffe's own limit, `kMaxBlobAxes`).
pub const MAX_AXES: usize = 32;
const ERR_LEN: usize = 2048;

#[repr(C)]
struct CsNet {
    _private: [u8; 0],
}

type FatalHook = extern "C" fn(msg: *const c_char, len: usize);

extern "C" {
    fn cs_init(min_log_level: c_int, hook: Option<FatalHook>) -> c_int;
    fn cs_caffe_version() -> *const c_char;
    fn cs_net_create(
        net: *const u8,
        net_len: usize,
        net_is_text: c_int,
        weights: *const u8,
        weights_len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut CsNet;
    fn cs_net_destroy(net: *mut CsNet);
    fn cs_net_num_inputs(net: *const CsNet) -> c_int;
    fn cs_net_num_outputs(net: *const CsNet) -> c_int;
    fn cs_net_input_name(net: *const CsNet, i: c_int) -> *const c_char;
    fn cs_net_output_name(net: *const CsNet, i: c_int) -> *const c_char;
    fn cs_net_blob_shape(
        net: *const CsNet,
        name: *const c_char,
        dims: *mut c_int,
        max_axes: c_int,
    ) -> c_int;
    fn cs_net_set_input(
        net: *mut CsNet,
        name: *const c_char,
        dims: *const c_int,
        num_axes: c_int,
        data: *const f32,
        count: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn cs_net_forward(net: *mut CsNet, err: *mut c_char, err_len: usize) -> c_int;
    fn cs_net_blob_data(
        net: *const CsNet,
        name: *const c_char,
        out: *mut f32,
        count: usize,
    ) -> c_int;
}

/// Errors Caffe reports without aborting.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("caffe: {0}")]
    Caffe(String),
    #[error("no blob named '{0}'")]
    NoSuchBlob(String),
    #[error("blob '{name}': {reason}")]
    BadShape { name: String, reason: String },
    #[error("name contains a NUL byte")]
    NulInName,
}

/// How the net definition is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFormat {
    /// protobuf text format (a `.prototxt`).
    Text,
    /// binary protobuf (e.g. the firewall's canonical re-encoding).
    Binary,
}

/// Initialises glog (stderr only) and Caffe's CPU mode. `hook` receives the text of a CHECK failure and
/// must not return (it should report and `_exit`).
pub fn init(min_log_level: i32, hook: FatalHook) -> Result<(), EngineError> {
    // SAFETY: plain C call; `hook` is a valid `extern "C"` function for the whole process lifetime.
    let rc = unsafe { cs_init(min_log_level, Some(hook)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(EngineError::Caffe("initialisation failed".into()))
    }
}

/// Caffe's version string.
pub fn caffe_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(cs_caffe_version()) }
        .to_string_lossy()
        .into_owned()
}

fn err_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A Caffe net in phase TEST with its trained weights.
pub struct Net {
    raw: NonNull<CsNet>,
}

// SAFETY: a Net is used from one thread at a time (it is not Sync); moving it between threads is fine because
// Caffe's CPU Net keeps no thread-local state tied to the creating thread.
unsafe impl Send for Net {}

impl Net {
    /// Builds a net from NetParameter bytes and copies trained weights (binary NetParameter) into it.
    pub fn new(net: &[u8], format: NetFormat, weights: Option<&[u8]>) -> Result<Net, EngineError> {
        let mut err = vec![0u8; ERR_LEN];
        let (wptr, wlen) = weights.map_or((std::ptr::null(), 0), |w| (w.as_ptr(), w.len()));
        // SAFETY: all pointers are valid for the given lengths for the duration of the call; the shim copies
        // what it keeps. `err` is writable for ERR_LEN bytes.
        let raw = unsafe {
            cs_net_create(
                net.as_ptr(),
                net.len(),
                c_int::from(format == NetFormat::Text),
                wptr,
                wlen,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        NonNull::new(raw)
            .map(|raw| Net { raw })
            .ok_or_else(|| EngineError::Caffe(err_string(&err)))
    }

    fn names(
        &self,
        count: c_int,
        get: unsafe extern "C" fn(*const CsNet, c_int) -> *const c_char,
    ) -> Vec<String> {
        (0..count)
            .filter_map(|i| {
                // SAFETY: `i` is in range; the returned string is owned by the live net and copied at once.
                let p = unsafe { get(self.raw.as_ptr(), i) };
                // SAFETY: non-null pointers from the shim are NUL-terminated.
                (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            })
            .collect()
    }

    /// Names of the net's inputs, in order.
    pub fn input_names(&self) -> Vec<String> {
        // SAFETY: the net is alive.
        let n = unsafe { cs_net_num_inputs(self.raw.as_ptr()) };
        self.names(n, cs_net_input_name)
    }

    /// Names of the net's outputs, in order.
    pub fn output_names(&self) -> Vec<String> {
        // SAFETY: the net is alive.
        let n = unsafe { cs_net_num_outputs(self.raw.as_ptr()) };
        self.names(n, cs_net_output_name)
    }

    /// Shape of a named blob.
    pub fn blob_shape(&self, name: &str) -> Result<Vec<usize>, EngineError> {
        let cname = CString::new(name).map_err(|_| EngineError::NulInName)?;
        let mut dims = [0 as c_int; MAX_AXES];
        // SAFETY: `dims` holds MAX_AXES ints; the shim writes at most that many.
        let n = unsafe {
            cs_net_blob_shape(
                self.raw.as_ptr(),
                cname.as_ptr(),
                dims.as_mut_ptr(),
                MAX_AXES as c_int,
            )
        };
        if n < 0 {
            return Err(EngineError::NoSuchBlob(name.into()));
        }
        let n = (n as usize).min(MAX_AXES);
        Ok(dims[..n].iter().map(|&d| d.max(0) as usize).collect())
    }

    /// Reshapes the named input to `dims` and copies `data` into it.
    pub fn set_input(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<(), EngineError> {
        let cname = CString::new(name).map_err(|_| EngineError::NulInName)?;
        let bad = |reason: &str| EngineError::BadShape {
            name: name.into(),
            reason: reason.into(),
        };
        if dims.is_empty() || dims.len() > MAX_AXES {
            return Err(bad("axis count outside 1..=32"));
        }
        let cdims = dims
            .iter()
            .map(|&d| c_int::try_from(d).ok().filter(|&d| d > 0))
            .collect::<Option<Vec<c_int>>>()
            .ok_or_else(|| bad("every dim must be in 1..=INT_MAX"))?;
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("overflow"))?;
        if count != data.len() {
            return Err(bad(&format!(
                "shape holds {count} values, {} given",
                data.len()
            )));
        }
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: pointers valid for their lengths; the shim copies `data` into the blob.
        let rc = unsafe {
            cs_net_set_input(
                self.raw.as_ptr(),
                cname.as_ptr(),
                cdims.as_ptr(),
                cdims.len() as c_int,
                data.as_ptr(),
                data.len(),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(EngineError::Caffe(err_string(&err)))
        }
    }

    /// Reshapes the net to its current inputs and runs a forward pass.
    pub fn forward(&mut self) -> Result<(), EngineError> {
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: the net is alive; `err` is writable for its length.
        let rc = unsafe { cs_net_forward(self.raw.as_ptr(), err.as_mut_ptr().cast(), err.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(EngineError::Caffe(err_string(&err)))
        }
    }

    /// Copies out a named blob: (shape, data).
    pub fn blob(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), EngineError> {
        let shape = self.blob_shape(name)?;
        let count = shape.iter().product::<usize>();
        let mut data = vec![0f32; count];
        let cname = CString::new(name).map_err(|_| EngineError::NulInName)?;
        // SAFETY: `data` has room for exactly `count` floats, which the shim checks against the blob.
        let rc = unsafe {
            cs_net_blob_data(self.raw.as_ptr(), cname.as_ptr(), data.as_mut_ptr(), count)
        };
        if rc != 0 {
            return Err(EngineError::NoSuchBlob(name.into()));
        }
        Ok((shape, data))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // SAFETY: `raw` came from cs_net_create and is destroyed exactly once.
        unsafe { cs_net_destroy(self.raw.as_ptr()) }
    }
}
