//! QR codes of short URLs, as SVG or PNG: the redirect serves them at
//! `/{code}/qr`, the console shows and offers them for download.

use qrcode::{Color, QrCode};

/// Pixels per QR module, and the quiet zone in modules (the spec's 4).
const MODULE_PIXELS: usize = 8;
const QUIET_ZONE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the short URL does not fit a QR code")]
    TooLong,
    #[error("cannot encode the QR code: {0}")]
    Png(#[from] ::png::EncodingError),
}

/// An SVG document of `text`'s QR code, black on white with the quiet zone.
pub fn svg(text: &str) -> Result<String, QrError> {
    let code = QrCode::new(text.as_bytes()).map_err(|_| QrError::TooLong)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(MODULE_PIXELS as u32, MODULE_PIXELS as u32)
        .build())
}

/// A greyscale PNG of `text`'s QR code, black modules on white with the
/// quiet zone.
pub fn png(text: &str) -> Result<Vec<u8>, QrError> {
    let code = QrCode::new(text.as_bytes()).map_err(|_| QrError::TooLong)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * MODULE_PIXELS;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (row, column) = (index / modules + QUIET_ZONE, index % modules + QUIET_ZONE);
        for y in row * MODULE_PIXELS..(row + 1) * MODULE_PIXELS {
            let start = y * side + column * MODULE_PIXELS;
            pixels[start..start + MODULE_PIXELS].fill(0);
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side).unwrap_or(u32::MAX);
    let mut encoder = ::png::Encoder::new(&mut out, side, side);
    encoder.set_color(::png::ColorType::Grayscale);
    encoder.set_depth(::png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(out)
}
