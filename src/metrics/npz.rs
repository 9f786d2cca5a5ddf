//! pytorch-fid's statistics files: a NumPy `.npz` (zip of `.npy`) holding `mu` (`d`, f64) and
//! `sigma` (`d x d`, f64), so statistics move between toonsmith and Python.

use std::io::{Read, Write};
use std::path::Path;

use nalgebra::{DMatrix, DVector};

use super::stats::Gaussian;
use crate::error::{Error, Result};

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotWeights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One `.npy` array: little-endian f64 (or f32) values in C order, and its shape.
fn encode_npy(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

fn decode_npy(path: &Path, name: &str, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f64>)> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(bad(path, format!("{name} is not a .npy array")));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(bytes.get(start..start + len).unwrap_or_default())
        .map_err(|_| bad(path, format!("{name}: unreadable header")))?;
    if header.contains("'fortran_order': True") {
        return Err(bad(
            path,
            format!("{name}: Fortran-ordered arrays are not supported"),
        ));
    }
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .ok_or_else(|| bad(path, format!("{name}: no shape in header")))?;
    let data = &bytes[start + len..];
    let values: Vec<f64> = if header.contains("'<f8'") {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    } else if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    } else {
        return Err(bad(
            path,
            format!("{name}: only little-endian float32/float64 arrays are supported"),
        ));
    };
    if values.len() != shape.iter().product::<usize>() {
        return Err(bad(
            path,
            format!("{name}: {} values for shape {shape:?}", values.len()),
        ));
    }
    Ok((shape, values))
}

/// Writes `mu` and `sigma` as pytorch-fid's `.npz`.
pub fn save(path: &Path, gaussian: &Gaussian) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let zip_err = |e: zip::result::ZipError| bad(path, e.to_string());
    let d = gaussian.mu.len();
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut buffer);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let sigma: Vec<f64> = gaussian.sigma.transpose().iter().copied().collect(); // row-major
        for (name, shape, values) in [
            ("mu.npy", vec![d], gaussian.mu.as_slice().to_vec()),
            ("sigma.npy", vec![d, d], sigma),
        ] {
            writer.start_file(name, options).map_err(zip_err)?;
            writer.write_all(&encode_npy(&shape, &values)).map_err(io)?;
        }
        writer.finish().map_err(zip_err)?;
    }
    crate::weights::write_atomic(path, buffer.get_ref())
}

/// Reads `mu` and `sigma` from a `.npz` written by pytorch-fid (or [`save`]).
pub fn load(path: &Path) -> Result<Gaussian> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| bad(path, format!("not an .npz file: {e}")))?;
    let mut read = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
        let mut entry = archive.by_name(&format!("{name}.npy")).map_err(|_| {
            bad(
                path,
                format!("no `{name}` array (pytorch-fid statistics hold mu and sigma)"),
            )
        })?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        decode_npy(path, name, &bytes)
    };
    let (mu_shape, mu) = read("mu")?;
    let (sigma_shape, sigma) = read("sigma")?;
    let d = mu.len();
    if mu_shape.len() != 1 || sigma_shape != [d, d] {
        return Err(bad(
            path,
            format!("mu {mu_shape:?} and sigma {sigma_shape:?} do not match"),
        ));
    }
    Ok(Gaussian {
        mu: DVector::from_vec(mu),
        sigma: DMatrix::from_row_slice(d, d, &sigma),
        count: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.npz");
        let g = Gaussian {
            mu: DVector::from_vec(vec![1.0, -2.5, 3.25]),
            sigma: DMatrix::from_row_slice(3, 3, &[2.0, 0.5, 0.1, 0.5, 1.0, 0.0, 0.1, 0.0, 3.0]),
            count: 0,
        };
        save(&path, &g).unwrap();
        assert_eq!(load(&path).unwrap(), g);
        let text = dir.path().join("text.npz");
        std::fs::write(&text, "hello").unwrap();
        assert!(load(&text)
            .unwrap_err()
            .to_string()
            .contains("not an .npz file"));
    }
}
