//! Per-layer-type shape rules, following Caffe 1.0's `LayerSetUp`/`Reshape` and their CHECKs.

use super::{count, problem, LResult, Out, INT_MAX};
use crate::finding::FindingCode::{BadDimension, BadParameter, BadTopology};
use crate::proto::caffe::{
    eltwise_parameter::EltwiseOp, lrn_parameter::NormRegion, pooling_parameter::PoolMethod,
    pooling_parameter::RoundMode, ConvolutionParameter, LayerParameter,
};

/// `None` when the type has no inference rule here.
pub(crate) fn infer_layer(ty: &str, l: &LayerParameter, b: &[Vec<i64>]) -> Option<LResult<Out>> {
    let nt = l.top.len();
    Some(match ty {
        "Input" => input(l, b, nt),
        "Convolution" => conv(l, b, nt, false),
        "Deconvolution" => conv(l, b, nt, true),
        "Pooling" => pooling(l, b, nt),
        "InnerProduct" => inner_product(l, b, nt),
        "ReLU" | "Sigmoid" | "TanH" | "BNLL" | "ELU" | "Power" | "Dropout" => {
            elementwise(ty, l, b, nt, 4)
        }
        "AbsVal" => {
            if l.top.first() == l.bottom.first() {
                Err(problem(
                    BadTopology,
                    Some("top"),
                    "AbsVal does not allow in-place computation",
                ))
            } else {
                elementwise(ty, l, b, nt, 1)
            }
        }
        "BatchNorm" => batch_norm(b, nt),
        "Scale" => scale(l, b, nt),
        "Eltwise" => eltwise(l, b, nt),
        "Concat" => concat(l, b, nt),
        "Softmax" => softmax(l, b, nt),
        "LRN" => lrn(l, b, nt),
        "Split" => split(b, nt),
        "Flatten" => flatten(l, b, nt),
        "Reshape" => reshape(l, b, nt),
        "Slice" => slice(l, b, nt),
        _ => return None,
    })
}

fn arity(b: &[Vec<i64>], nt: usize, bot: (usize, usize), top: (usize, usize)) -> LResult<()> {
    if b.len() < bot.0 || b.len() > bot.1 {
        return Err(problem(
            BadTopology,
            Some("bottom"),
            format!("{} bottoms, layer takes {}..={}", b.len(), bot.0, bot.1),
        ));
    }
    if nt < top.0 || nt > top.1 {
        return Err(problem(
            BadTopology,
            Some("top"),
            format!("{nt} tops, layer takes {}..={}", top.0, top.1),
        ));
    }
    Ok(())
}

/// `Blob::CanonicalAxisIndex`.
fn axis(a: i32, num_axes: usize, field: &'static str) -> LResult<usize> {
    let n = num_axes as i64;
    let a = i64::from(a);
    if a < -n || a >= n {
        return Err(problem(
            BadParameter,
            Some(field),
            format!("axis {a} out of range for a {n}-axis blob"),
        ));
    }
    Ok(if a < 0 { (a + n) as usize } else { a as usize })
}

/// Saturating product (inputs are not yet validated against INT_MAX).
fn prod(s: &[i64]) -> i64 {
    s.iter().fold(1i64, |a, &d| a.saturating_mul(d))
}

/// Saturating FLOP product.
fn fl(xs: &[i64]) -> u128 {
    xs.iter()
        .fold(1u128, |a, &d| a.saturating_mul(u128::from(d.max(0) as u64)))
}

fn input(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (0, 0), (1, usize::MAX))?;
    let shapes = l
        .input_param
        .as_ref()
        .map(|p| p.shape.as_slice())
        .unwrap_or_default();
    if shapes.is_empty() {
        return Err(problem(
            BadDimension,
            Some("input_param.shape"),
            "Input layer without a shape",
        ));
    }
    if shapes.len() != 1 && shapes.len() != nt {
        return Err(problem(
            BadParameter,
            Some("input_param.shape"),
            format!("{} shapes for {nt} tops", shapes.len()),
        ));
    }
    // Validate before cloning (one shape may be copied to many tops).
    for sh in shapes {
        count(&sh.dim, Some("input_param.shape"))?;
    }
    let tops: Vec<Vec<i64>> = (0..nt)
        .map(|i| shapes[if shapes.len() == 1 { 0 } else { i }].dim.clone())
        .collect();
    Ok(Out {
        tops,
        ..Out::default()
    })
}

/// Kernel/stride/pad/dilation per spatial axis, exactly as `BaseConvolutionLayer::LayerSetUp`.
fn spatial(
    list: &[u32],
    h: Option<u32>,
    w: Option<u32>,
    n: usize,
    default: u32,
    field: &'static str,
) -> LResult<Vec<i64>> {
    if h.is_some() || w.is_some() {
        if n != 2 {
            return Err(problem(
                BadParameter,
                Some(field),
                "_h/_w forms are only for 2D",
            ));
        }
        if !list.is_empty() {
            return Err(problem(
                BadParameter,
                Some(field),
                "both the list and the _h/_w forms are given",
            ));
        }
        return Ok(vec![i64::from(h.unwrap_or(0)), i64::from(w.unwrap_or(0))]);
    }
    match list.len() {
        0 => Ok(vec![i64::from(default); n]),
        1 => Ok(vec![i64::from(list[0]); n]),
        k if k == n => Ok(list.iter().map(|&v| i64::from(v)).collect()),
        k => Err(problem(
            BadParameter,
            Some(field),
            format!("{k} values for {n} spatial axes"),
        )),
    }
}

fn conv(l: &LayerParameter, b: &[Vec<i64>], nt: usize, deconv: bool) -> LResult<Out> {
    arity(b, nt, (1, usize::MAX), (b.len(), b.len()))?;
    let default = ConvolutionParameter::default();
    let p = l.convolution_param.as_ref().unwrap_or(&default);
    let s0 = &b[0];
    if b.iter().any(|s| s != s0) {
        return Err(problem(
            BadTopology,
            Some("bottom"),
            "all inputs must have the same shape",
        ));
    }
    let ca = axis(p.axis(), s0.len(), "convolution_param.axis")?;
    let n = s0.len() - ca - 1;
    let kernel = spatial(
        &p.kernel_size,
        p.kernel_h,
        p.kernel_w,
        n,
        0,
        "convolution_param.kernel_size",
    )?;
    let stride = spatial(
        &p.stride,
        p.stride_h,
        p.stride_w,
        n,
        1,
        "convolution_param.stride",
    )?;
    let pad = spatial(&p.pad, p.pad_h, p.pad_w, n, 0, "convolution_param.pad")?;
    let dil = spatial(&p.dilation, None, None, n, 1, "convolution_param.dilation")?;
    for (v, f, min) in [
        (&kernel, "kernel_size", 1),
        (&stride, "stride", 1),
        (&dil, "dilation", 1),
        (&pad, "pad", 0),
    ] {
        if let Some(x) = v.iter().find(|&&x| x < min || x > INT_MAX) {
            return Err(problem(
                BadParameter,
                Some(field_name(f)),
                format!("{f} {x} out of range ({min}..=INT_MAX)"),
            ));
        }
    }
    let channels = s0[ca];
    let num_output = i64::from(p.num_output());
    let group = i64::from(p.group());
    if num_output <= 0 || num_output > INT_MAX {
        return Err(problem(
            BadParameter,
            Some("convolution_param.num_output"),
            format!("num_output {num_output} must be in 1..=INT_MAX"),
        ));
    }
    if group <= 0 || group > INT_MAX {
        return Err(problem(
            BadParameter,
            Some("convolution_param.group"),
            format!("group {group} must be positive (Caffe divides by it)"),
        ));
    }
    if channels % group != 0 {
        return Err(problem(
            BadParameter,
            Some("convolution_param.group"),
            format!("group {group} does not divide {channels} input channels"),
        ));
    }
    if num_output % group != 0 {
        return Err(problem(
            BadParameter,
            Some("convolution_param.group"),
            format!("group {group} does not divide num_output {num_output}"),
        ));
    }
    let in_sp = &s0[ca + 1..];
    let mut out_sp = Vec::with_capacity(n);
    for i in 0..n {
        let ext = dil[i]
            .checked_mul(kernel[i] - 1)
            .and_then(|v| v.checked_add(1))
            .filter(|&v| v <= INT_MAX);
        let ext = ext.ok_or_else(|| {
            problem(
                BadParameter,
                Some("convolution_param.dilation"),
                "dilated kernel extent exceeds INT_MAX",
            )
        })?;
        let o = if deconv {
            stride[i] * (in_sp[i] - 1) + ext - 2 * pad[i]
        } else {
            let padded = in_sp[i] + 2 * pad[i];
            if padded < ext {
                return Err(problem(
                    BadParameter,
                    Some("convolution_param.kernel_size"),
                    format!(
                        "kernel extent {ext} exceeds padded input {padded} on spatial axis {i}"
                    ),
                ));
            }
            (padded - ext) / stride[i] + 1
        };
        if o <= 0 || o > INT_MAX {
            return Err(problem(
                BadDimension,
                Some("convolution_param"),
                format!("output size {o} on spatial axis {i}"),
            ));
        }
        out_sp.push(o);
    }
    let mut top = s0[..ca].to_vec();
    top.push(num_output);
    top.extend_from_slice(&out_sp);
    let (conv_out, conv_in) = if deconv {
        (channels, num_output)
    } else {
        (num_output, channels)
    };
    let mut w = vec![conv_out, conv_in / group];
    w.extend_from_slice(&kernel);
    let mut params = vec![w];
    if p.bias_term() {
        params.push(vec![num_output]);
    }
    // col buffer spatial extent: output for convolution, input for deconvolution.
    let col_sp = if deconv { in_sp } else { &out_sp[..] };
    let is_1x1 = kernel.iter().all(|&k| k == 1)
        && stride.iter().all(|&s| s == 1)
        && pad.iter().all(|&p| p == 0);
    let mut buffers = Vec::new();
    if !is_1x1 || p.force_nd_im2col() {
        let mut col = vec![conv_in];
        col.extend_from_slice(&kernel);
        col.extend_from_slice(col_sp);
        buffers.push(col);
    }
    let flops = fl(&[
        2,
        prod(&s0[..ca]),
        conv_out,
        conv_in / group,
        prod(&kernel),
        prod(col_sp),
    ]);
    Ok(Out {
        tops: vec![top; b.len()],
        params,
        buffers,
        flops,
        shares_data: false,
    })
}

fn field_name(f: &str) -> &'static str {
    match f {
        "kernel_size" => "convolution_param.kernel_size",
        "stride" => "convolution_param.stride",
        "dilation" => "convolution_param.dilation",
        _ => "convolution_param.pad",
    }
}

fn pooling(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    let default = Default::default();
    let p = l.pooling_param.as_ref().unwrap_or(&default);
    let method = PoolMethod::try_from(p.pool.unwrap_or(0)).map_err(|_| {
        problem(
            BadParameter,
            Some("pooling_param.pool"),
            "unknown pooling method",
        )
    })?;
    arity(
        b,
        nt,
        (1, 1),
        (1, if method == PoolMethod::Max { 2 } else { 1 }),
    )?;
    let s = &b[0];
    if s.len() != 4 {
        return Err(problem(
            BadDimension,
            Some("bottom"),
            format!("Pooling needs a 4-axis input, got {s:?}"),
        ));
    }
    let f = |x: &str| -> Option<&'static str> {
        Some(match x {
            "k" => "pooling_param.kernel_size",
            "s" => "pooling_param.stride",
            _ => "pooling_param.pad",
        })
    };
    let (kh, kw) = if p.global_pooling() {
        if p.kernel_size.is_some() || p.kernel_h.is_some() || p.kernel_w.is_some() {
            return Err(problem(
                BadParameter,
                f("k"),
                "global pooling with an explicit kernel size",
            ));
        }
        (s[2], s[3])
    } else {
        match (p.kernel_size, p.kernel_h, p.kernel_w) {
            (Some(k), None, None) => (i64::from(k), i64::from(k)),
            (None, Some(h), Some(w)) => (i64::from(h), i64::from(w)),
            _ => {
                return Err(problem(
                    BadParameter,
                    f("k"),
                    "give kernel_size or both kernel_h and kernel_w",
                ))
            }
        }
    };
    let hw =
        |one: Option<u32>, h: Option<u32>, w: Option<u32>, d: u32, fl| -> LResult<(i64, i64)> {
            match (one, h, w) {
                (o, None, None) => Ok((i64::from(o.unwrap_or(d)), i64::from(o.unwrap_or(d)))),
                (None, Some(h), Some(w)) => Ok((i64::from(h), i64::from(w))),
                _ => Err(problem(
                    BadParameter,
                    f(fl),
                    "give the single value or both _h and _w",
                )),
            }
        };
    let (sh, sw) = hw(p.stride, p.stride_h, p.stride_w, 1, "s")?;
    let (ph, pw) = hw(p.pad, p.pad_h, p.pad_w, 0, "p")?;
    if kh <= 0 || kw <= 0 || kh > INT_MAX || kw > INT_MAX {
        return Err(problem(
            BadParameter,
            f("k"),
            format!("kernel {kh}x{kw} out of range"),
        ));
    }
    if sh <= 0 || sw <= 0 || sh > INT_MAX || sw > INT_MAX {
        return Err(problem(
            BadParameter,
            f("s"),
            format!("stride {sh}x{sw} must be positive (Caffe divides by it)"),
        ));
    }
    if p.global_pooling() && (ph != 0 || pw != 0 || sh != 1 || sw != 1) {
        return Err(problem(
            BadParameter,
            f("p"),
            "global pooling needs pad 0 and stride 1",
        ));
    }
    if (ph != 0 || pw != 0) && (ph >= kh || pw >= kw || method == PoolMethod::Stochastic) {
        return Err(problem(
            BadParameter,
            f("p"),
            "pad must be smaller than the kernel (and only MAX/AVE pad)",
        ));
    }
    let floor = p.round_mode.is_some_and(|m| m == RoundMode::Floor as i32);
    let pooled = |len: i64, pad: i64, k: i64, st: i64| -> LResult<i64> {
        let num = len + 2 * pad - k;
        if num < 0 {
            return Err(problem(
                BadParameter,
                f("k"),
                format!("kernel {k} exceeds padded input {}", len + 2 * pad),
            ));
        }
        // Caffe computes this in float.
        let q = num as f32 / st as f32;
        let mut o = (if floor { q.floor() } else { q.ceil() }) as i64 + 1;
        if pad != 0 && (o - 1) * st >= len + pad {
            o -= 1;
        }
        Ok(o)
    };
    let oh = pooled(s[2], ph, kh, sh)?;
    let ow = pooled(s[3], pw, kw, sw)?;
    let top = vec![s[0], s[1], oh, ow];
    let mut buffers = Vec::new();
    if nt == 1 && method != PoolMethod::Ave {
        buffers.push(top.clone());
    }
    let flops = fl(&[prod(&top), kh, kw]);
    Ok(Out {
        tops: vec![top; nt],
        buffers,
        flops,
        ..Out::default()
    })
}

fn inner_product(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    let default = Default::default();
    let p = l.inner_product_param.as_ref().unwrap_or(&default);
    let s = &b[0];
    let ax = axis(p.axis(), s.len(), "inner_product_param.axis")?;
    let n = i64::from(p.num_output());
    if n <= 0 || n > INT_MAX {
        return Err(problem(
            BadParameter,
            Some("inner_product_param.num_output"),
            format!("num_output {n} must be in 1..=INT_MAX"),
        ));
    }
    let k = prod(&s[ax..]);
    let m = prod(&s[..ax]);
    let mut top = s[..ax].to_vec();
    top.push(n);
    let mut params = vec![if p.transpose() {
        vec![k, n]
    } else {
        vec![n, k]
    }];
    if p.bias_term() {
        params.push(vec![n]);
    }
    let flops = fl(&[2, m, n, k]);
    Ok(Out {
        tops: vec![top],
        params,
        buffers: vec![vec![m]],
        flops,
        shares_data: false,
    })
}

fn elementwise(ty: &str, l: &LayerParameter, b: &[Vec<i64>], nt: usize, per: u128) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    if ty == "Dropout" {
        let r = l.dropout_param.as_ref().map_or(0.5, |p| p.dropout_ratio());
        if !(r > 0.0 && r < 1.0) {
            return Err(problem(
                BadParameter,
                Some("dropout_param.dropout_ratio"),
                format!("dropout_ratio {r} must be in (0, 1)"),
            ));
        }
    }
    Ok(Out {
        tops: vec![b[0].clone()],
        flops: fl(&[prod(&b[0])]) * per,
        ..Out::default()
    })
}

fn batch_norm(b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    let s = &b[0];
    let c = match s.len() {
        0 => {
            return Err(problem(
                BadDimension,
                Some("bottom"),
                "BatchNorm of a 0-axis blob",
            ))
        }
        1 => 1,
        _ => s[1],
    };
    let n = fl(&[prod(s)]);
    Ok(Out {
        tops: vec![s.clone()],
        params: vec![vec![c], vec![c], vec![1]],
        buffers: vec![s.clone(), s.clone()],
        flops: 4 * n,
        shares_data: false,
    })
}

fn scale(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 2), (1, 1))?;
    let default = Default::default();
    let p = l.scale_param.as_ref().unwrap_or(&default);
    let s = &b[0];
    let mut params = Vec::new();
    if b.len() == 1 {
        let ax = axis(p.axis(), s.len().max(1), "scale_param.axis")?;
        let na = p.num_axes();
        if na < -1 {
            return Err(problem(
                BadParameter,
                Some("scale_param.num_axes"),
                format!("num_axes {na} must be >= -1"),
            ));
        }
        let end = if na == -1 { s.len() } else { ax + na as usize };
        if end > s.len() {
            return Err(problem(
                BadParameter,
                Some("scale_param.num_axes"),
                format!(
                    "axis {ax} + num_axes {na} exceeds the {}-axis input",
                    s.len()
                ),
            ));
        }
        params.push(s[ax..end].to_vec());
        if p.bias_term() {
            params.push(s[ax..end].to_vec());
        }
    } else {
        let sc = &b[1];
        let ax = if sc.is_empty() {
            0
        } else {
            axis(p.axis(), s.len(), "scale_param.axis")?
        };
        if ax + sc.len() > s.len() || s[ax..ax + sc.len()] != sc[..] {
            return Err(problem(
                BadDimension,
                Some("bottom"),
                format!("scale blob {sc:?} does not match input {s:?} at axis {ax}"),
            ));
        }
        if p.bias_term() {
            params.push(sc.clone());
        }
    }
    let mut buffers = Vec::new();
    if l.top.first() == l.bottom.first() {
        buffers.push(s.clone());
    }
    let n = fl(&[prod(s)]);
    Ok(Out {
        tops: vec![s.clone()],
        params,
        buffers,
        flops: 2 * n,
        shares_data: false,
    })
}

fn eltwise(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (2, usize::MAX), (1, 1))?;
    let default = Default::default();
    let p = l.eltwise_param.as_ref().unwrap_or(&default);
    let op = EltwiseOp::try_from(p.operation.unwrap_or(1)).map_err(|_| {
        problem(
            BadParameter,
            Some("eltwise_param.operation"),
            "unknown operation",
        )
    })?;
    if !p.coeff.is_empty() && (p.coeff.len() != b.len() || op != EltwiseOp::Sum) {
        return Err(problem(
            BadParameter,
            Some("eltwise_param.coeff"),
            "coeff needs SUM and one value per bottom",
        ));
    }
    if b.iter().any(|s| s != &b[0]) {
        return Err(problem(
            BadDimension,
            Some("bottom"),
            "Eltwise inputs must have the same shape",
        ));
    }
    let buffers = if op == EltwiseOp::Max {
        vec![b[0].clone()]
    } else {
        vec![]
    };
    let n = fl(&[prod(&b[0])]);
    Ok(Out {
        tops: vec![b[0].clone()],
        buffers,
        flops: n * (b.len() as u128 - 1),
        ..Out::default()
    })
}

fn concat(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, usize::MAX), (1, 1))?;
    let default = Default::default();
    let p = l.concat_param.as_ref().unwrap_or(&default);
    let s = &b[0];
    let ax = match (p.axis, p.concat_dim) {
        (Some(_), Some(_)) => {
            return Err(problem(
                BadParameter,
                Some("concat_param"),
                "both axis and concat_dim given",
            ))
        }
        (None, Some(d)) if (d as usize) < s.len() => d as usize,
        (None, Some(d)) => {
            return Err(problem(
                BadParameter,
                Some("concat_param.concat_dim"),
                format!("concat_dim {d} out of range"),
            ))
        }
        _ => axis(p.axis(), s.len(), "concat_param.axis")?,
    };
    let mut top = s.clone();
    for o in &b[1..] {
        if o.len() != s.len()
            || o.iter()
                .zip(s)
                .enumerate()
                .any(|(i, (x, y))| i != ax && x != y)
        {
            return Err(problem(
                BadDimension,
                Some("bottom"),
                format!("Concat inputs {s:?} and {o:?} differ off axis {ax}"),
            ));
        }
        top[ax] = top[ax]
            .checked_add(o[ax])
            .filter(|&v| v <= INT_MAX)
            .ok_or_else(|| {
                problem(
                    BadDimension,
                    Some("bottom"),
                    "concatenated axis exceeds INT_MAX",
                )
            })?;
    }
    Ok(Out {
        shares_data: b.len() == 1,
        tops: vec![top],
        ..Out::default()
    })
}

fn softmax(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    let s = &b[0];
    let ax = axis(
        l.softmax_param.as_ref().map_or(1, |p| p.axis()),
        s.len(),
        "softmax_param.axis",
    )?;
    let mut sc = s.clone();
    sc[ax] = 1;
    let n = fl(&[prod(s)]);
    Ok(Out {
        tops: vec![s.clone()],
        buffers: vec![sc],
        flops: 4 * n,
        ..Out::default()
    })
}

fn lrn(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    let default = Default::default();
    let p = l.lrn_param.as_ref().unwrap_or(&default);
    let s = &b[0];
    if s.len() != 4 {
        return Err(problem(
            BadDimension,
            Some("bottom"),
            format!("LRN needs a 4-axis input, got {s:?}"),
        ));
    }
    let size = i64::from(p.local_size());
    if size % 2 != 1 || size > s[1].max(s[2]).max(s[3]) * 2 + 1 {
        return Err(problem(
            BadParameter,
            Some("lrn_param.local_size"),
            format!("local_size {size} must be odd and not exceed the input"),
        ));
    }
    let region = NormRegion::try_from(p.norm_region.unwrap_or(0)).map_err(|_| {
        problem(
            BadParameter,
            Some("lrn_param.norm_region"),
            "unknown region",
        )
    })?;
    let buffers = match region {
        NormRegion::AcrossChannels => vec![
            s.clone(),
            vec![1, s[1].saturating_add(size - 1), s[2], s[3]],
        ],
        NormRegion::WithinChannel => vec![s.clone(); 4],
    };
    let n = fl(&[prod(s)]);
    let flops = n * fl(&[
        size,
        if region == NormRegion::WithinChannel {
            size
        } else {
            1
        },
        2,
    ]);
    Ok(Out {
        tops: vec![s.clone()],
        buffers,
        flops,
        ..Out::default()
    })
}

fn split(b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, usize::MAX))?;
    Ok(Out {
        tops: vec![b[0].clone(); nt],
        shares_data: true,
        ..Out::default()
    })
}

fn flatten(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    if l.top.first() == l.bottom.first() {
        return Err(problem(
            BadTopology,
            Some("top"),
            "Flatten does not allow in-place computation",
        ));
    }
    let s = &b[0];
    let (a, e) = l
        .flatten_param
        .as_ref()
        .map_or((1, -1), |p| (p.axis(), p.end_axis()));
    let a = axis(a, s.len(), "flatten_param.axis")?;
    let e = axis(e, s.len(), "flatten_param.end_axis")?;
    if e < a {
        return Err(problem(
            BadParameter,
            Some("flatten_param.end_axis"),
            "end_axis before axis",
        ));
    }
    let mut top = s[..a].to_vec();
    top.push(prod(&s[a..=e]));
    top.extend_from_slice(&s[e + 1..]);
    Ok(Out {
        tops: vec![top],
        shares_data: true,
        ..Out::default()
    })
}

fn reshape(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, 1))?;
    if l.top.first() == l.bottom.first() {
        return Err(problem(
            BadTopology,
            Some("top"),
            "Reshape does not allow in-place computation",
        ));
    }
    let default = Default::default();
    let p = l.reshape_param.as_ref().unwrap_or(&default);
    let dims = p.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    let s = &b[0];
    let nb = s.len() as i64;
    let ia = i64::from(p.axis());
    let start = if ia >= 0 { ia } else { nb + ia + 1 };
    let na = i64::from(p.num_axes());
    let bad = |r: String| problem(BadParameter, Some("reshape_param"), r);
    if start < 0 || start > nb || na < -1 {
        return Err(bad(format!("axis {ia} / num_axes {na} out of range")));
    }
    let end = if na == -1 { nb } else { start + na };
    if end > nb {
        return Err(bad(format!("axis {ia} + num_axes {na} exceeds {nb} axes")));
    }
    let (start, end) = (start as usize, end as usize);
    let mut mid = Vec::with_capacity(dims.len());
    let mut inferred = None;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err(bad("more than one -1 dimension".into())),
            -1 => {
                inferred = Some(i);
                mid.push(1);
            }
            0 => {
                let v = *s
                    .get(start + i)
                    .ok_or_else(|| bad(format!("dim 0 at {i} has no input axis to copy")))?;
                mid.push(v);
            }
            d if d > 0 && d <= INT_MAX => mid.push(d),
            d => {
                return Err(problem(
                    BadDimension,
                    Some("reshape_param.shape.dim"),
                    format!("dimension {d} invalid"),
                ))
            }
        }
    }
    let total = prod(s);
    let mut top: Vec<i64> = s[..start].to_vec();
    top.extend_from_slice(&mid);
    top.extend_from_slice(&s[end..]);
    let explicit = top
        .iter()
        .try_fold(1i64, |a, &d| a.checked_mul(d))
        .filter(|&v| v > 0 && v <= INT_MAX)
        .ok_or_else(|| bad("shape product overflows".into()))?;
    if let Some(i) = inferred {
        if total % explicit != 0 {
            return Err(bad(format!(
                "input count {total} not divisible by {explicit}"
            )));
        }
        top[start + i] = total / explicit;
    }
    if count(&top, Some("reshape_param.shape"))? != total {
        return Err(bad(format!(
            "reshape from {s:?} to {top:?} changes the element count"
        )));
    }
    Ok(Out {
        tops: vec![top],
        shares_data: true,
        ..Out::default()
    })
}

fn slice(l: &LayerParameter, b: &[Vec<i64>], nt: usize) -> LResult<Out> {
    arity(b, nt, (1, 1), (1, usize::MAX))?;
    let default = Default::default();
    let p = l.slice_param.as_ref().unwrap_or(&default);
    let s = &b[0];
    let ax = match (p.axis, p.slice_dim) {
        (Some(_), Some(_)) => {
            return Err(problem(
                BadParameter,
                Some("slice_param"),
                "both axis and slice_dim given",
            ))
        }
        (None, Some(d)) if (d as usize) < s.len() => d as usize,
        (None, Some(d)) => {
            return Err(problem(
                BadParameter,
                Some("slice_param.slice_dim"),
                format!("slice_dim {d} out of range"),
            ))
        }
        _ => axis(p.axis(), s.len(), "slice_param.axis")?,
    };
    let dim = s[ax];
    let mut sizes = Vec::with_capacity(nt);
    if p.slice_point.is_empty() {
        if dim % nt as i64 != 0 {
            return Err(problem(
                BadParameter,
                Some("slice_param"),
                format!("axis size {dim} not divisible by {nt} tops"),
            ));
        }
        sizes = vec![dim / nt as i64; nt];
    } else {
        if p.slice_point.len() + 1 != nt {
            return Err(problem(
                BadParameter,
                Some("slice_param.slice_point"),
                format!("{} slice points for {nt} tops", p.slice_point.len()),
            ));
        }
        let mut prev = 0i64;
        for &pt in &p.slice_point {
            let pt = i64::from(pt);
            if pt <= prev || pt >= dim {
                return Err(problem(
                    BadParameter,
                    Some("slice_param.slice_point"),
                    format!("slice point {pt} not increasing within (0, {dim})"),
                ));
            }
            sizes.push(pt - prev);
            prev = pt;
        }
        sizes.push(dim - prev);
    }
    let tops = sizes
        .into_iter()
        .map(|n| {
            let mut t = s.clone();
            t[ax] = n;
            t
        })
        .collect();
    Ok(Out {
        tops,
        shares_data: nt == 1,
        ..Out::default()
    })
}
