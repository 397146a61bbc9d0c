//! The `.caffemodel` (binary `NetParameter`): HDF5 sniffing, a bounded zero-copy wire-format walk
//! that extracts only layer names and parameter blobs, and the canonical re-encoding.
//!
//! Caffe's `CopyTrainedLayersFrom` uses nothing of the weights file but each layer's name and
//! blobs (matched to the deploy net by name; unmatched layers are ignored). The canonical weights
//! are therefore a fresh `NetParameter` holding, for each deploy layer with parameters, its name,
//! type and blobs as `BlobShape` + packed float `data` — the checked shapes and the original
//! float bytes. Legacy V1/V0 layers, legacy 4-D blob dims, `double_data`, `diff`s and every other
//! field never reach Caffe (so neither do its legacy upgrade paths).

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

use crate::finding::{Finding, FindingCode};

/// The HDF5 superblock signature.
pub const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Offset of an HDF5 signature where libhdf5 looks for one (0, 512, 1024, 2048, ...).
pub fn hdf5_signature_offset(bytes: &[u8]) -> Option<usize> {
    let mut off = 0usize;
    loop {
        if bytes.get(off..off.checked_add(8)?)? == HDF5_SIGNATURE {
            return Some(off);
        }
        off = if off == 0 { 512 } else { off.checked_mul(2)? };
    }
}

/// Float payload of a blob: borrowed little-endian f32 ranges of the input, or converted values.
#[derive(Debug, Clone, PartialEq)]
enum Chunk {
    Borrowed(usize, usize),
    Owned(Vec<u8>),
}

/// One parameter blob as found in the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightBlob {
    /// `shape.dim`, if given.
    pub shape: Option<Vec<i64>>,
    /// Legacy `num`, `channels`, `height`, `width` (missing ones are 0, as in Caffe), if any is set.
    pub legacy: Option<[i32; 4]>,
    float_data: Vec<Chunk>,
    double_data: Vec<Chunk>,
    float_count: usize,
    double_count: usize,
}

impl WeightBlob {
    /// Number of values Caffe would copy (`double_data` wins when present, as in `Blob::FromProto`).
    pub fn len(&self) -> usize {
        if self.double_count > 0 {
            self.double_count
        } else {
            self.float_count
        }
    }

    /// Whether the blob holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether Caffe's `Blob::ShapeEquals` would accept this blob for a parameter of `expected`
    /// shape. Stricter than Caffe: int64 dims must match exactly (Caffe truncates them to int).
    pub fn shape_matches(&self, expected: &[i64]) -> bool {
        if let Some(l) = self.legacy {
            if expected.len() > 4 {
                return false;
            }
            let mut padded = vec![1i64; 4 - expected.len()];
            padded.extend_from_slice(expected);
            return padded.iter().zip(l).all(|(&a, b)| a == i64::from(b));
        }
        self.shape.as_deref().unwrap_or(&[]) == expected
    }

    /// Shape as written in the file (for messages).
    pub fn shape_text(&self) -> String {
        match (&self.legacy, &self.shape) {
            (Some(l), _) => format!("legacy {l:?}"),
            (None, Some(s)) => format!("{s:?}"),
            (None, None) => "[]".into(),
        }
    }
}

/// One layer of the weights file: name, type and blobs.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightLayer {
    /// Layer name.
    pub name: String,
    /// Type string (V2) or the V1 enum number rendered as text.
    pub ty: String,
    /// Parameter blobs.
    pub blobs: Vec<WeightBlob>,
}

/// The walked weights file.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Layers in file order.
    pub layers: Vec<WeightLayer>,
    /// Whether legacy V1/V0 layers were present.
    pub legacy: bool,
}

/// Caps for the walk.
#[derive(Debug, Clone, Copy)]
pub struct WeightLimits {
    /// Maximum number of layers.
    pub max_layers: usize,
    /// Maximum blobs per layer and dims per shape.
    pub max_repeated: usize,
    /// Maximum name length.
    pub max_string_len: usize,
    /// Maximum number of blobs in the whole file.
    pub max_blobs: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

type WResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Reader { buf, pos, end }
    }
    fn done(&self) -> bool {
        self.pos >= self.end
    }
    fn varint(&mut self) -> WResult<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .filter(|_| self.pos < self.end)
                .ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn key(&mut self) -> WResult<(u64, u8)> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err("field number 0".into());
        }
        Ok((field, (k & 7) as u8))
    }
    fn take(&mut self, n: usize) -> WResult<(usize, usize)> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or("length past the end of its message")?;
        self.pos = end;
        Ok((start, end))
    }
    fn len_delim(&mut self) -> WResult<(usize, usize)> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
        self.take(n)
    }
    fn skip(&mut self, wire: u8) -> WResult<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.len_delim().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!(
                "unsupported wire type {w} (groups are not used by caffe.proto)"
            )),
        }
    }
    fn string(&mut self, max: usize) -> WResult<String> {
        let (s, e) = self.len_delim()?;
        if e - s > max {
            return Err(format!("string of {} bytes, limit {max}", e - s));
        }
        String::from_utf8(self.buf[s..e].to_vec()).map_err(|_| "name is not UTF-8".into())
    }
}

/// Walk a `.caffemodel`. Refuses malformed wire data; findings carry the reason.
pub fn parse_weights(bytes: &[u8], lim: WeightLimits) -> Result<Weights, Finding> {
    walk_net(bytes, lim)
        .map_err(|e| Finding::error(FindingCode::WeightsParseError, format!("caffemodel: {e}")))
}

fn walk_net(bytes: &[u8], lim: WeightLimits) -> WResult<Weights> {
    let mut r = Reader::new(bytes, 0, bytes.len());
    let mut w = Weights {
        layers: Vec::new(),
        legacy: false,
    };
    let mut blobs = 0usize;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (100, 2) => {
                let (s, e) = r.len_delim()?;
                w.layers.push(walk_layer(bytes, s, e, lim, LayerKind::V2)?);
            }
            (2, 2) => {
                let (s, e) = r.len_delim()?;
                w.legacy = true;
                w.layers.push(walk_layer(bytes, s, e, lim, LayerKind::V1)?);
            }
            (100 | 2, _) => {
                return Err(format!(
                    "field {field} has wire type {wire}, expected a message"
                ))
            }
            _ => {
                r.skip(wire)?;
                continue;
            }
        }
        if w.layers.len() > lim.max_layers {
            return Err(format!("more than {} layers", lim.max_layers));
        }
        blobs += w.layers.last().map_or(0, |l| l.blobs.len());
        if blobs > lim.max_blobs {
            return Err(format!("more than {} blobs", lim.max_blobs));
        }
    }
    Ok(w)
}

#[derive(Clone, Copy, PartialEq)]
enum LayerKind {
    V2,
    V1,
    V0,
}

fn walk_layer(
    buf: &[u8],
    s: usize,
    e: usize,
    lim: WeightLimits,
    kind: LayerKind,
) -> WResult<WeightLayer> {
    // (name, type, blobs, nested V0) field numbers per format.
    let (f_name, f_type, f_blobs) = match kind {
        LayerKind::V2 => (1, 2, 7),
        LayerKind::V1 => (4, 5, 6),
        LayerKind::V0 => (1, 2, 50),
    };
    let mut r = Reader::new(buf, s, e);
    let mut layer = WeightLayer {
        name: String::new(),
        ty: String::new(),
        blobs: Vec::new(),
    };
    let mut v0: Option<WeightLayer> = None;
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == f_name && wire == 2 {
            layer.name = r.string(lim.max_string_len)?;
        } else if field == f_type && wire == 2 && kind != LayerKind::V1 {
            layer.ty = r.string(lim.max_string_len)?;
        } else if field == f_type && wire == 0 && kind == LayerKind::V1 {
            layer.ty = format!("V1 type {}", r.varint()?);
        } else if field == f_blobs && wire == 2 {
            let (bs, be) = r.len_delim()?;
            layer.blobs.push(walk_blob(buf, bs, be, lim)?);
            if layer.blobs.len() > lim.max_repeated {
                return Err(format!(
                    "layer {:?}: more than {} blobs",
                    layer.name, lim.max_repeated
                ));
            }
        } else if kind == LayerKind::V1 && field == 1 && wire == 2 {
            let (ls, le) = r.len_delim()?;
            v0 = Some(walk_layer(buf, ls, le, lim, LayerKind::V0)?);
        } else if field == f_name || field == f_type || field == f_blobs {
            return Err(format!(
                "layer field {field} has unexpected wire type {wire}"
            ));
        } else {
            r.skip(wire)?;
        }
    }
    // Caffe's V0->V1 upgrade takes name and blobs from the nested V0 layer.
    if let Some(v0) = v0 {
        if layer.name.is_empty() {
            layer.name = v0.name;
        }
        if layer.blobs.is_empty() {
            layer.blobs = v0.blobs;
        }
        if layer.ty.is_empty() {
            layer.ty = v0.ty;
        }
    }
    Ok(layer)
}

/// Record float bytes `buf[s..e]`: large runs are borrowed, small ones (unpacked values, tiny
/// packed runs) are copied, so the bookkeeping never exceeds the input's size.
fn push_chunk(chunks: &mut Vec<Chunk>, buf: &[u8], s: usize, e: usize) {
    const BORROW_MIN: usize = 256;
    if e - s >= BORROW_MIN {
        chunks.push(Chunk::Borrowed(s, e));
        return;
    }
    if let Some(Chunk::Owned(v)) = chunks.last_mut() {
        v.extend_from_slice(&buf[s..e]);
    } else if e > s {
        chunks.push(Chunk::Owned(buf[s..e].to_vec()));
    }
}

fn walk_blob(buf: &[u8], s: usize, e: usize, lim: WeightLimits) -> WResult<WeightBlob> {
    let mut r = Reader::new(buf, s, e);
    let mut b = WeightBlob {
        shape: None,
        legacy: None,
        float_data: vec![],
        double_data: vec![],
        float_count: 0,
        double_count: 0,
    };
    let mut legacy = [0i32; 4];
    let mut has_legacy = false;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (7, 2) => {
                let (ss, se) = r.len_delim()?;
                let dims = b.shape.get_or_insert_with(Vec::new);
                let mut sr = Reader::new(buf, ss, se);
                while !sr.done() {
                    match sr.key()? {
                        (1, 2) => {
                            let (ds, de) = sr.len_delim()?;
                            let mut dr = Reader::new(buf, ds, de);
                            while !dr.done() {
                                dims.push(dr.varint()? as i64);
                                if dims.len() > lim.max_repeated {
                                    return Err("too many dims".into());
                                }
                            }
                        }
                        (1, 0) => dims.push(sr.varint()? as i64),
                        (_, w) => sr.skip(w)?,
                    }
                    if dims.len() > lim.max_repeated {
                        return Err("too many dims".into());
                    }
                }
            }
            (5, 2) | (5, 5) => {
                let (ds, de) = if wire == 2 {
                    r.len_delim()?
                } else {
                    r.take(4)?
                };
                if (de - ds) % 4 != 0 {
                    return Err("packed float data length is not a multiple of 4".into());
                }
                b.float_count += (de - ds) / 4;
                push_chunk(&mut b.float_data, buf, ds, de);
            }
            (8, 2) | (8, 1) => {
                let (ds, de) = if wire == 2 {
                    r.len_delim()?
                } else {
                    r.take(8)?
                };
                if (de - ds) % 8 != 0 {
                    return Err("packed double data length is not a multiple of 8".into());
                }
                let floats: Vec<u8> = buf[ds..de]
                    .chunks_exact(8)
                    .flat_map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        // Caffe: data_vec[i] = proto.double_data(i) (double -> float conversion).
                        (f64::from_le_bytes(a) as f32).to_le_bytes()
                    })
                    .collect();
                b.double_count += (de - ds) / 8;
                match b.double_data.last_mut() {
                    Some(Chunk::Owned(v)) => v.extend_from_slice(&floats),
                    _ => b.double_data.push(Chunk::Owned(floats)),
                }
            }
            (1..=4, 0) => {
                legacy[field as usize - 1] = r.varint()? as i32;
                has_legacy = true;
            }
            (1..=8, _) if !matches!((field, wire), (6 | 9, _)) => {
                return Err(format!(
                    "blob field {field} has unexpected wire type {wire}"
                ));
            }
            _ => r.skip(wire)?,
        }
    }
    if has_legacy {
        b.legacy = Some(legacy);
    }
    Ok(b)
}

/// One layer of the canonical weights: name, type, its blobs and their checked shapes.
pub type CanonicalLayer<'a> = (&'a str, &'a str, &'a [WeightBlob], &'a [Vec<i64>]);

/// Encode the canonical weights: for each `(name, type, blobs, expected shapes)` a V2 layer with
/// name, type and blobs as `shape` + packed `data`.
pub fn encode_canonical(src: &[u8], layers: &[CanonicalLayer<'_>]) -> Vec<u8> {
    let ld = |n: usize| 1 + encoded_len_varint(n as u64) + n;
    let dims_len = |s: &[i64]| {
        s.iter()
            .map(|&d| encoded_len_varint(d as u64))
            .sum::<usize>()
    };
    let blob_len = |b: &WeightBlob, s: &[i64]| ld(ld(dims_len(s))) + ld(4 * b.len());
    let layer_len = |(name, ty, blobs, shapes): &CanonicalLayer<'_>| {
        ld(name.len())
            + ld(ty.len())
            + blobs
                .iter()
                .zip(shapes.iter())
                .map(|(b, s)| ld(blob_len(b, s)))
                .sum::<usize>()
    };
    let total: usize = layers.iter().map(|l| ld(layer_len(l)) + 1).sum();
    let mut out = Vec::with_capacity(total);
    for l in layers {
        let (name, ty, blobs, shapes) = l;
        encode_key(100, WireType::LengthDelimited, &mut out);
        encode_varint(layer_len(l) as u64, &mut out);
        for (field, s) in [(1u32, name), (2, ty)] {
            encode_key(field, WireType::LengthDelimited, &mut out);
            encode_varint(s.len() as u64, &mut out);
            out.extend_from_slice(s.as_bytes());
        }
        for (b, shape) in blobs.iter().zip(shapes.iter()) {
            encode_key(7, WireType::LengthDelimited, &mut out);
            encode_varint(blob_len(b, shape) as u64, &mut out);
            encode_key(7, WireType::LengthDelimited, &mut out);
            encode_varint(ld(dims_len(shape)) as u64, &mut out);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(dims_len(shape) as u64, &mut out);
            for &d in shape {
                encode_varint(d as u64, &mut out);
            }
            encode_key(5, WireType::LengthDelimited, &mut out);
            encode_varint(4 * b.len() as u64, &mut out);
            let chunks = if b.double_count > 0 {
                &b.double_data
            } else {
                &b.float_data
            };
            for c in chunks {
                match c {
                    Chunk::Borrowed(s, e) => out.extend_from_slice(&src[*s..*e]),
                    Chunk::Owned(v) => out.extend_from_slice(v),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdf5_signature_found_at_libhdf5_offsets() {
        let mut f = vec![0u8; 5000];
        assert_eq!(hdf5_signature_offset(&f), None);
        f[2048..2056].copy_from_slice(HDF5_SIGNATURE);
        assert_eq!(hdf5_signature_offset(&f), Some(2048));
        f[..8].copy_from_slice(HDF5_SIGNATURE);
        assert_eq!(hdf5_signature_offset(&f), Some(0));
        let mut g = vec![0u8; 1500];
        g[1000..1008].copy_from_slice(HDF5_SIGNATURE);
        assert_eq!(hdf5_signature_offset(&g), None);
    }
}
