//! `-smbios type=N,field=value,...` and `-uuid`: the SMBIOS fields PC firmware publishes
//! (QEMU 7.2 hw/smbios/smbios.c `smbios_entry_add`; errors worded as QEMU words them).

use rvmm_arch::smbios::SmbiosFields;
use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};

/// Why a `-smbios` or `-uuid` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SmbiosArgError {
    #[error("Must specify type= or file=")]
    NoType,
    #[error("Don't know how to build fields for SMBIOS type {0}")]
    UnknownType(u64),
    #[error("fields for SMBIOS type {0} are not supported")]
    UnsupportedType(u64),
    #[error("file= (binary SMBIOS structures) is not supported")]
    File,
    #[error("Invalid parameter '{0}'")]
    InvalidParameter(String),
    #[error("parameter '{0}' is not supported")]
    UnsupportedParameter(String),
    #[error("Invalid UUID")]
    InvalidUuid,
    #[error("Invalid release")]
    InvalidRelease,
    #[error("failed to parse UUID string: wrong format")]
    UuidFormat,
    #[error("SMBIOS CPU speed is too large (> 65535)")]
    SpeedTooLarge,
    #[error("{0}")]
    Opts(#[source] OptsError),
}

/// Parses an RFC 4122 UUID as QEMU's `qemu_uuid_parse`: 8-4-4-4-12 hex digits.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hex = std::str::from_utf8(&b[i..i + 2]).ok()?;
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        out[n] = u8::from_str_radix(hex, 16).ok()?;
        n += 1;
        i += 2;
    }
    Some(out)
}

/// `-uuid`: the machine UUID (SMBIOS type 1).
pub fn parse_uuid_option(fields: &mut SmbiosFields, arg: &str) -> Result<(), SmbiosArgError> {
    fields.system.uuid = Some(parse_uuid(arg).ok_or(SmbiosArgError::UuidFormat)?);
    Ok(())
}

/// Copies each string parameter of `keys` that is present into its field (a later option
/// keeps fields it does not name).
fn strings(opts: &QemuOpts, fields: &mut [(&str, &mut Option<String>)]) {
    for (key, field) in fields.iter_mut() {
        if let Some(v) = opts.get(key) {
            **field = Some(v.to_string());
        }
    }
}

/// Checks that every parameter is `type` or one of `known`.
fn check(opts: &QemuOpts, known: &[&str]) -> Result<(), SmbiosArgError> {
    match opts
        .params()
        .iter()
        .find(|(k, _)| k != "type" && !known.contains(&k.as_str()))
    {
        Some((k, _)) => Err(SmbiosArgError::InvalidParameter(k.clone())),
        None => Ok(()),
    }
}

/// A speed in MHz or MT/s (`max-speed`, `current-speed`, `speed`).
fn speed(opts: &QemuOpts, key: &str) -> Result<Option<u16>, SmbiosArgError> {
    match opts.get_u64(key).map_err(SmbiosArgError::Opts)? {
        None => Ok(None),
        Some(v) => u16::try_from(v)
            .map(Some)
            .map_err(|_| SmbiosArgError::SpeedTooLarge),
    }
}

/// `-smbios`: merges the fields of one option into `fields`.
pub fn parse_smbios(fields: &mut SmbiosFields, arg: &str) -> Result<(), SmbiosArgError> {
    let opts = QemuOpts::parse(arg, None).map_err(SmbiosArgError::Opts)?;
    if opts.contains("file") {
        return Err(SmbiosArgError::File);
    }
    let ty = opts
        .get_u64("type")
        .map_err(SmbiosArgError::Opts)?
        .ok_or(SmbiosArgError::NoType)?;
    match ty {
        0 => {
            check(&opts, &["vendor", "version", "date", "release", "uefi"])?;
            let b = fields.bios.get_or_insert_with(Default::default);
            strings(
                &opts,
                &mut [
                    ("vendor", &mut b.vendor),
                    ("version", &mut b.version),
                    ("date", &mut b.date),
                ],
            );
            if let Some(r) = opts.get("release") {
                b.release = Some(parse_release(r).ok_or(SmbiosArgError::InvalidRelease)?);
            }
            if let Some(uefi) = opts.get_bool("uefi").map_err(SmbiosArgError::Opts)? {
                b.uefi = uefi;
            }
        }
        1 => {
            let known = [
                "manufacturer",
                "product",
                "version",
                "serial",
                "uuid",
                "sku",
                "family",
            ];
            check(&opts, &known)?;
            let s = &mut fields.system;
            strings(
                &opts,
                &mut [
                    ("manufacturer", &mut s.manufacturer),
                    ("product", &mut s.product),
                    ("version", &mut s.version),
                    ("serial", &mut s.serial),
                    ("sku", &mut s.sku),
                    ("family", &mut s.family),
                ],
            );
            if let Some(u) = opts.get("uuid") {
                s.uuid = Some(parse_uuid(u).ok_or(SmbiosArgError::InvalidUuid)?);
            }
        }
        2 => {
            let known = [
                "manufacturer",
                "product",
                "version",
                "serial",
                "asset",
                "location",
            ];
            check(&opts, &known)?;
            let b = fields.baseboard.get_or_insert_with(Default::default);
            strings(
                &opts,
                &mut [
                    ("manufacturer", &mut b.manufacturer),
                    ("product", &mut b.product),
                    ("version", &mut b.version),
                    ("serial", &mut b.serial),
                    ("asset", &mut b.asset),
                    ("location", &mut b.location),
                ],
            );
        }
        3 => {
            check(
                &opts,
                &["manufacturer", "version", "serial", "asset", "sku"],
            )?;
            let c = &mut fields.chassis;
            strings(
                &opts,
                &mut [
                    ("manufacturer", &mut c.manufacturer),
                    ("version", &mut c.version),
                    ("serial", &mut c.serial),
                    ("asset", &mut c.asset),
                    ("sku", &mut c.sku),
                ],
            );
        }
        4 => {
            if opts.contains("processor-id") {
                return Err(SmbiosArgError::UnsupportedParameter("processor-id".into()));
            }
            let known = [
                "sock_pfx",
                "manufacturer",
                "version",
                "serial",
                "asset",
                "part",
                "max-speed",
                "current-speed",
            ];
            check(&opts, &known)?;
            let p = &mut fields.processor;
            strings(
                &opts,
                &mut [
                    ("sock_pfx", &mut p.sock_pfx),
                    ("manufacturer", &mut p.manufacturer),
                    ("version", &mut p.version),
                    ("serial", &mut p.serial),
                    ("asset", &mut p.asset),
                    ("part", &mut p.part),
                ],
            );
            if let Some(s) = speed(&opts, "max-speed")? {
                p.max_speed = Some(s);
            }
            if let Some(s) = speed(&opts, "current-speed")? {
                p.current_speed = Some(s);
            }
        }
        11 => {
            if opts.contains("path") {
                return Err(SmbiosArgError::UnsupportedParameter("path".into()));
            }
            check(&opts, &["value"])?;
            // Every value=, in order (a repeated key adds a string).
            fields.oem_strings.extend(
                opts.params()
                    .iter()
                    .filter(|(k, _)| k == "value")
                    .map(|(_, v)| v.clone()),
            );
        }
        17 => {
            let known = [
                "loc_pfx",
                "bank",
                "manufacturer",
                "serial",
                "asset",
                "part",
                "speed",
            ];
            check(&opts, &known)?;
            let m = &mut fields.memory_device;
            strings(
                &opts,
                &mut [
                    ("loc_pfx", &mut m.loc_pfx),
                    ("bank", &mut m.bank),
                    ("manufacturer", &mut m.manufacturer),
                    ("serial", &mut m.serial),
                    ("asset", &mut m.asset),
                    ("part", &mut m.part),
                ],
            );
            if let Some(s) = speed(&opts, "speed")? {
                m.speed = Some(s);
            }
        }
        // QEMU 7.2 builds these from fields too; rvmm does not.
        8 | 41 => return Err(SmbiosArgError::UnsupportedType(ty)),
        _ => return Err(SmbiosArgError::UnknownType(ty)),
    }
    Ok(())
}

/// `release=major.minor`, each a byte (QEMU's `%hhu.%hhu`).
fn parse_release(text: &str) -> Option<(u8, u8)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SmbiosFields, SmbiosArgError> {
        let mut f = SmbiosFields::default();
        for a in args {
            parse_smbios(&mut f, a)?;
        }
        Ok(f)
    }

    #[test]
    fn fields_by_type() {
        let f = parse(&[
            "type=1,manufacturer=ACME,product=Box,serial=S1,sku=K,family=F",
            "type=1,version=2,uuid=12345678-9abc-def0-0123-456789ABCDEF",
            "type=0,vendor=V,date=01/02/2024,release=1.2,uefi=on",
            "type=3,asset=A",
            "type=4,sock_pfx=Socket,max-speed=3000",
            "type=11,value=one,value=two",
            "type=11,value=three",
            "type=17,bank=B0,speed=3200",
            "type=2,location=L",
        ])
        .unwrap();
        assert_eq!(f.system.manufacturer.as_deref(), Some("ACME"));
        assert_eq!(f.system.product.as_deref(), Some("Box"));
        assert_eq!(f.system.version.as_deref(), Some("2"));
        assert_eq!(f.system.family.as_deref(), Some("F"));
        assert_eq!(
            f.system.uuid,
            Some([
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ])
        );
        let b = f.bios.unwrap();
        assert_eq!(
            (b.vendor.as_deref(), b.release, b.uefi),
            (Some("V"), Some((1, 2)), true)
        );
        assert_eq!(f.chassis.asset.as_deref(), Some("A"));
        assert_eq!(f.processor.sock_pfx.as_deref(), Some("Socket"));
        assert_eq!(f.processor.max_speed, Some(3000));
        assert_eq!(f.oem_strings, ["one", "two", "three"]);
        assert_eq!(f.memory_device.speed, Some(3200));
        assert_eq!(f.baseboard.unwrap().location.as_deref(), Some("L"));
    }

    #[test]
    fn errors_are_qemus() {
        let e = |a: &str| parse(&[a]).unwrap_err().to_string();
        assert_eq!(e("type=1,foo=bar"), "Invalid parameter 'foo'");
        assert_eq!(
            e("type=5"),
            "Don't know how to build fields for SMBIOS type 5"
        );
        assert_eq!(e("manufacturer=x"), "Must specify type= or file=");
        assert_eq!(e("type=1,uuid=zz"), "Invalid UUID");
        assert_eq!(e("type=0,release=x"), "Invalid release");
        assert_eq!(e("type=0,release=1.256"), "Invalid release");
        assert_eq!(
            e("type=4,max-speed=70000"),
            "SMBIOS CPU speed is too large (> 65535)"
        );
        assert_eq!(e("type=x"), "parameter 'type' expects a number, got 'x'");
        assert!(e("file=/x").contains("not supported"));
        assert!(e("type=8").contains("not supported"));
        let mut f = SmbiosFields::default();
        assert_eq!(
            parse_uuid_option(&mut f, "abc").unwrap_err().to_string(),
            "failed to parse UUID string: wrong format"
        );
        parse_uuid_option(&mut f, "00000000-0000-0000-0000-00000000000a").unwrap();
        assert_eq!(f.system.uuid.unwrap()[15], 0x0a);
        assert!(parse_uuid("00000000-0000-0000-0000_00000000000a").is_none());
        assert!(parse_uuid("0000000g-0000-0000-0000-00000000000a").is_none());
    }
}
