//! The VMDESCRIPTION trailer (format §8.2) as a typed tree.
//!
//! QEMU appends a JSON description of every VMState section it wrote. [`Description::parse`]
//! checks its shape strictly (known keys only, in any order; integers where integers belong)
//! and [`Description::to_json`] writes it back with QEMU's key order, so the tree can stand in
//! for the JSON (`vmstate inspect --desc` prints it, the same value as analyze-migration.py
//! `-d desc`).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// A malformed description: where in the JSON (a path like `devices[3].fields[2].size`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescError {
    /// JSON path of the offending item.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VMDESCRIPTION {}: {}", self.path, self.message)
    }
}

impl std::error::Error for DescError {}

/// The whole trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// QEMU 10.x only: the configuration record's layout, written before `page_size`.
    pub configuration: Option<SubsectionDesc>,
    /// Target page size (4096 on x86).
    pub page_size: u64,
    /// One entry per FULL section, in stream order.
    pub devices: Vec<Device>,
}

/// A device object: one FULL section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The section idstr.
    pub name: String,
    /// The section instance id.
    pub instance_id: u32,
    /// VMState devices: the vmsd name and the version written. Old-style (`save_state`)
    /// devices have none.
    pub vmsd: Option<(String, u32)>,
    /// Old-style devices: the body size.
    pub size: Option<u64>,
    /// The body layout.
    pub body: BodyDesc,
}

/// Fields and subsections of one body (a section, a nested struct or a subsection).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyDesc {
    /// Fields in wire order.
    pub fields: Vec<FieldDesc>,
    /// Subsections in wire order; `None` when the JSON has no `subsections` key.
    pub subsections: Option<Vec<SubsectionDesc>>,
}

/// A nested vmsd: a `struct` field's `"struct"` object, or a subsection object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsectionDesc {
    /// Full vmsd name (for subsections, the name on the wire, e.g. `fw_cfg/dma`).
    pub vmsd_name: String,
    /// Version written.
    pub version: u32,
    /// Its body.
    pub body: BodyDesc,
}

/// How a field object covers array elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// A single element.
    One,
    /// `"array_len": n`: n elements described once.
    ArrayLen(u64),
    /// `"index": i`: element i of an array described per element.
    Index(u64),
}

/// What a field's elements are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Bytes interpreted by the type name alone (integers, buffers, timers, ...).
    Leaf,
    /// `"type": "struct"` with a `"struct"` object.
    Struct(SubsectionDesc),
    /// `vstruct` / `tmp`: the child's keys written into the field object itself.
    Inline(SubsectionDesc),
}

/// A field object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc {
    /// Name as QEMU spells it (may hold dots and brackets, e.g. `env.regs`, `unused[1]`).
    pub name: String,
    /// Array form.
    pub repeat: Repeat,
    /// VMStateInfo name, `struct`, `vstruct` or `tmp`.
    pub type_name: String,
    /// Nested description, if any.
    pub kind: FieldKind,
    /// Bytes written for one element (for structs, including their subsections).
    pub size: u64,
}

fn err(path: &Path<'_>, message: impl Into<String>) -> DescError {
    DescError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The error for `key` of the object at `path`.
fn key_err(path: &Path<'_>, key: &str, message: &str) -> DescError {
    DescError {
        path: format!("{path}.{key}"),
        message: message.to_string(),
    }
}

/// Where an item is in the JSON, built only when an error names it: the root (""), a
/// top-level member (`devices[3]`, `configuration`), or a member of another item
/// (`devices[3].fields[2]`).
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Top(&'p str, Option<usize>),
    Child(&'p Path<'p>, &'p str, Option<usize>),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, index) = match self {
            Path::Root => return Ok(()),
            Path::Top(name, index) => (name, index),
            Path::Child(parent, name, index) => {
                write!(f, "{parent}.")?;
                (name, index)
            }
        };
        f.write_str(name)?;
        match index {
            Some(i) => write!(f, "[{i}]"),
            None => Ok(()),
        }
    }
}

/// A JSON value as the description is read: strings borrowed from the text when they hold no
/// escapes, objects as their members in order (few keys each: found by a scan, not a hash).
#[derive(Debug)]
enum J<'a> {
    Obj(Vec<(Cow<'a, str>, J<'a>)>),
    Arr(Vec<J<'a>>),
    Str(Cow<'a, str>),
    /// A number: its value when it is an unsigned integer (what `Value::as_u64` accepts).
    Num(Option<u64>),
    /// `true`, `false`, `null`.
    Other,
}

type Obj<'a> = [(Cow<'a, str>, J<'a>)];

/// Members of an object with one key several times: the last one counts, as in a
/// `serde_json::Map`.
fn get<'o, 'a>(m: &'o Obj<'a>, key: &str) -> Option<&'o J<'a>> {
    m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn contains_key(m: &Obj<'_>, key: &str) -> bool {
    m.iter().any(|(k, _)| k == key)
}

impl<'de> Deserialize<'de> for J<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J<'de>, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<J<'de>, E> {
        Ok(J::Other)
    }
    fn visit_unit<E>(self) -> Result<J<'de>, E> {
        Ok(J::Other)
    }
    fn visit_u64<E>(self, v: u64) -> Result<J<'de>, E> {
        Ok(J::Num(Some(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J<'de>, E> {
        Ok(J::Num(u64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<J<'de>, E> {
        Ok(J::Num(None))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
        while let Some(v) = a.next_element()? {
            items.push(v);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some((Key(k), v)) = a.next_entry()? {
            members.push((k, v));
        }
        Ok(J::Obj(members))
    }
}

/// An object key, borrowed when it can be.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        match d.deserialize_str(JVisitor)? {
            J::Str(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom("expected a string key")),
        }
    }
}

/// The borrowed form of a `serde_json::Value` (for [`Description::parse`]).
fn from_value(v: &Value) -> J<'_> {
    match v {
        Value::Object(m) => J::Obj(
            m.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), from_value(v)))
                .collect(),
        ),
        Value::Array(a) => J::Arr(a.iter().map(from_value).collect()),
        Value::String(s) => J::Str(Cow::Borrowed(s)),
        Value::Number(n) => J::Num(n.as_u64()),
        Value::Bool(_) | Value::Null => J::Other,
    }
}

fn object<'o, 'a>(v: &'o J<'a>, path: &Path<'_>) -> Result<&'o Obj<'a>, DescError> {
    match v {
        J::Obj(m) => Ok(m),
        _ => Err(err(path, "expected an object")),
    }
}

fn only_keys(m: &Obj<'_>, allowed: &[&str], path: &Path<'_>) -> Result<(), DescError> {
    match m.iter().find(|(k, _)| !allowed.contains(&k.as_ref())) {
        Some((k, _)) => Err(err(path, format!("unexpected key \"{k}\""))),
        None => Ok(()),
    }
}

fn uint(m: &Obj<'_>, key: &str, path: &Path<'_>) -> Result<Option<u64>, DescError> {
    match get(m, key) {
        None => Ok(None),
        Some(J::Num(Some(n))) => Ok(Some(*n)),
        Some(_) => Err(key_err(path, key, "expected an unsigned integer")),
    }
}

fn req_uint(m: &Obj<'_>, key: &str, path: &Path<'_>) -> Result<u64, DescError> {
    uint(m, key, path)?.ok_or_else(|| err(path, format!("missing \"{key}\"")))
}

fn req_u32(m: &Obj<'_>, key: &str, path: &Path<'_>) -> Result<u32, DescError> {
    u32::try_from(req_uint(m, key, path)?)
        .map_err(|_| key_err(path, key, "expected a 32-bit value"))
}

fn req_str(m: &Obj<'_>, key: &str, path: &Path<'_>) -> Result<String, DescError> {
    match get(m, key) {
        Some(J::Str(s)) => Ok(s.to_string()),
        Some(_) => Err(key_err(path, key, "expected a string")),
        None => Err(err(path, format!("missing \"{key}\""))),
    }
}

fn array<'o, 'a>(m: &'o Obj<'a>, key: &str, path: &Path<'_>) -> Result<&'o [J<'a>], DescError> {
    match get(m, key) {
        Some(J::Arr(a)) => Ok(a),
        Some(_) => Err(key_err(path, key, "expected an array")),
        None => Err(err(path, format!("missing \"{key}\""))),
    }
}

/// Largest trailer accepted. QEMU's pc trailers are about 100 KiB; the trailer is attacker
/// controlled (untrusted-input §5), so parsing it is capped (serde_json also caps nesting at
/// 128 levels).
pub const MAX_DESCRIPTION_LEN: usize = 16 << 20;

impl Description {
    /// Parses the trailer's JSON text.
    pub fn from_json_bytes(json: &[u8]) -> Result<Description, DescError> {
        if json.len() > MAX_DESCRIPTION_LEN {
            return Err(err(
                &Path::Root,
                format!(
                    "{} bytes of JSON: expected at most {MAX_DESCRIPTION_LEN}",
                    json.len()
                ),
            ));
        }
        let v: J<'_> = serde_json::from_slice(json).map_err(|e| err(&Path::Root, e.to_string()))?;
        Description::read(&v)
    }

    /// Parses an already decoded JSON value.
    pub fn parse(v: &Value) -> Result<Description, DescError> {
        Description::read(&from_value(v))
    }

    fn read(v: &J<'_>) -> Result<Description, DescError> {
        let root = Path::Root;
        let m = object(v, &root)?;
        only_keys(m, &["configuration", "page_size", "devices"], &root)?;
        let configuration = match get(m, "configuration") {
            None => None,
            Some(c) => {
                let p = Path::Top("configuration", None);
                let cm = object(c, &p)?;
                only_keys(cm, &["vmsd_name", "version", "fields", "subsections"], &p)?;
                Some(SubsectionDesc::parse(cm, &p)?)
            }
        };
        let page_size = req_uint(m, "page_size", &root)?;
        let devices = array(m, "devices", &root)?
            .iter()
            .enumerate()
            .map(|(i, d)| Device::parse(d, &Path::Top("devices", Some(i))))
            .collect::<Result<_, _>>()?;
        Ok(Description {
            configuration,
            page_size,
            devices,
        })
    }

    /// The JSON value, keys in QEMU's order.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(c) = &self.configuration {
            m.insert("configuration".into(), c.to_json());
        }
        m.insert("page_size".into(), self.page_size.into());
        m.insert(
            "devices".into(),
            Value::Array(self.devices.iter().map(Device::to_json).collect()),
        );
        Value::Object(m)
    }
}

impl Device {
    fn parse(v: &J<'_>, path: &Path<'_>) -> Result<Device, DescError> {
        let m = object(v, path)?;
        only_keys(
            m,
            &[
                "name",
                "instance_id",
                "vmsd_name",
                "version",
                "size",
                "fields",
                "subsections",
            ],
            path,
        )?;
        let vmsd = match contains_key(m, "vmsd_name") {
            true => Some((req_str(m, "vmsd_name", path)?, req_u32(m, "version", path)?)),
            false if contains_key(m, "version") => {
                return Err(err(path, "\"version\" without \"vmsd_name\""));
            }
            false => None,
        };
        let size = uint(m, "size", path)?;
        if vmsd.is_none() && size.is_none() {
            return Err(err(path, "neither \"vmsd_name\" nor \"size\""));
        }
        Ok(Device {
            name: req_str(m, "name", path)?,
            instance_id: req_u32(m, "instance_id", path)?,
            vmsd,
            size,
            body: BodyDesc::parse(m, path)?,
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("instance_id".into(), self.instance_id.into());
        if let Some((n, v)) = &self.vmsd {
            m.insert("vmsd_name".into(), n.clone().into());
            m.insert("version".into(), (*v).into());
        }
        if let Some(s) = self.size {
            m.insert("size".into(), s.into());
        }
        self.body.write_json(&mut m);
        Value::Object(m)
    }
}

impl BodyDesc {
    fn parse(m: &Obj<'_>, path: &Path<'_>) -> Result<BodyDesc, DescError> {
        let fields = array(m, "fields", path)?
            .iter()
            .enumerate()
            .map(|(i, f)| FieldDesc::parse(f, &Path::Child(path, "fields", Some(i))))
            .collect::<Result<_, _>>()?;
        let subsections = match contains_key(m, "subsections") {
            false => None,
            true => Some(
                array(m, "subsections", path)?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let p = Path::Child(path, "subsections", Some(i));
                        let sm = object(s, &p)?;
                        only_keys(sm, &["vmsd_name", "version", "fields", "subsections"], &p)?;
                        SubsectionDesc::parse(sm, &p)
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(BodyDesc {
            fields,
            subsections,
        })
    }

    fn write_json(&self, m: &mut Map<String, Value>) {
        m.insert(
            "fields".into(),
            Value::Array(self.fields.iter().map(FieldDesc::to_json).collect()),
        );
        if let Some(s) = &self.subsections {
            m.insert(
                "subsections".into(),
                Value::Array(s.iter().map(SubsectionDesc::to_json).collect()),
            );
        }
    }

    /// The subsections (empty when none are listed).
    pub fn subsections(&self) -> &[SubsectionDesc] {
        self.subsections.as_deref().unwrap_or(&[])
    }
}

impl SubsectionDesc {
    fn parse(m: &Obj<'_>, path: &Path<'_>) -> Result<SubsectionDesc, DescError> {
        Ok(SubsectionDesc {
            vmsd_name: req_str(m, "vmsd_name", path)?,
            version: req_u32(m, "version", path)?,
            body: BodyDesc::parse(m, path)?,
        })
    }

    fn write_json(&self, m: &mut Map<String, Value>) {
        m.insert("vmsd_name".into(), self.vmsd_name.clone().into());
        m.insert("version".into(), self.version.into());
        self.body.write_json(m);
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.write_json(&mut m);
        Value::Object(m)
    }
}

impl FieldDesc {
    fn parse(v: &J<'_>, path: &Path<'_>) -> Result<FieldDesc, DescError> {
        let m = object(v, path)?;
        let type_name = req_str(m, "type", path)?;
        let inline = contains_key(m, "vmsd_name");
        let allowed: &[&str] = if inline {
            &[
                "name",
                "array_len",
                "index",
                "type",
                "vmsd_name",
                "version",
                "fields",
                "subsections",
                "size",
            ]
        } else {
            &["name", "array_len", "index", "type", "struct", "size"]
        };
        only_keys(m, allowed, path)?;
        let repeat = match (uint(m, "array_len", path)?, uint(m, "index", path)?) {
            (None, None) => Repeat::One,
            (Some(n), None) => Repeat::ArrayLen(n),
            (None, Some(i)) => Repeat::Index(i),
            (Some(_), Some(_)) => return Err(err(path, "both \"array_len\" and \"index\"")),
        };
        let kind = match (get(m, "struct"), inline) {
            (Some(s), _) => {
                let p = Path::Child(path, "struct", None);
                let sm = object(s, &p)?;
                only_keys(sm, &["vmsd_name", "version", "fields", "subsections"], &p)?;
                FieldKind::Struct(SubsectionDesc::parse(sm, &p)?)
            }
            (None, true) => FieldKind::Inline(SubsectionDesc::parse(m, path)?),
            (None, false) if type_name == "struct" => {
                return Err(err(path, "type \"struct\" without a \"struct\" object"));
            }
            (None, false) => FieldKind::Leaf,
        };
        Ok(FieldDesc {
            name: req_str(m, "name", path)?,
            repeat,
            type_name,
            kind,
            size: req_uint(m, "size", path)?,
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        match self.repeat {
            Repeat::One => {}
            Repeat::ArrayLen(n) => {
                m.insert("array_len".into(), n.into());
            }
            Repeat::Index(i) => {
                m.insert("index".into(), i.into());
            }
        }
        m.insert("type".into(), self.type_name.clone().into());
        match &self.kind {
            FieldKind::Leaf => {}
            FieldKind::Struct(s) => {
                m.insert("struct".into(), s.to_json());
            }
            FieldKind::Inline(s) => s.write_json(&mut m),
        }
        m.insert("size".into(), self.size.into());
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FW_CFG: &str = r#"{"page_size": 4096, "devices": [{"name": "fw_cfg", "instance_id": 0, "vmsd_name": "fw_cfg", "version": 2, "fields": [{"name": "cur_entry", "type": "uint16", "size": 2}, {"name": "cur_offset[1]", "type": "uint32", "size": 4}], "subsections": [{"vmsd_name": "fw_cfg/dma", "version": 0, "fields": [{"name": "dma_addr", "type": "uint64", "size": 8}]}]}, {"name": "old", "instance_id": 1, "size": 3, "fields": [{"name": "data", "size": 3, "type": "buffer"}]}]}"#;

    #[test]
    fn parses_and_writes_back_in_qemu_key_order() {
        let d = Description::from_json_bytes(FW_CFG.as_bytes()).unwrap();
        assert_eq!(d.devices.len(), 2);
        let fw = &d.devices[0];
        assert_eq!(fw.vmsd, Some(("fw_cfg".to_string(), 2)));
        assert_eq!(fw.body.fields[1].name, "cur_offset[1]");
        assert_eq!(fw.body.subsections()[0].vmsd_name, "fw_cfg/dma");
        assert_eq!(d.devices[1].size, Some(3));
        assert_eq!(d.devices[1].vmsd, None);
        // QEMU's order for fields is name, type, size; the old-style entry had size before type.
        let out = serde_json::to_string(&d.to_json()).unwrap();
        assert!(out.starts_with(r#"{"page_size":4096,"devices":[{"name":"fw_cfg","instance_id":0,"vmsd_name":"fw_cfg","version":2,"fields":[{"name":"cur_entry","type":"uint16","size":2}"#), "{out}");
        let v: Value = serde_json::from_str(FW_CFG).unwrap();
        assert_eq!(d.to_json(), v);
    }

    #[test]
    fn qemu_10_configuration_object_is_kept_first() {
        let json = r#"{"configuration": {"vmsd_name": "configuration", "version": 1, "fields": [{"name": "len", "type": "uint32", "size": 4}, {"name": "name", "type": "buffer", "size": 13}]}, "page_size": 4096, "devices": []}"#;
        let d = Description::from_json_bytes(json.as_bytes()).unwrap();
        let c = d.configuration.as_ref().unwrap();
        assert_eq!(
            (c.vmsd_name.as_str(), c.body.fields.len()),
            ("configuration", 2)
        );
        let out = serde_json::to_string(&d.to_json()).unwrap();
        assert_eq!(out, json.replace(": ", ":").replace(", ", ","));
    }

    #[test]
    fn rejects_malformed_descriptions_with_a_path() {
        let cases = [
            (r#"{"page_size": 4096}"#, "", "missing \"devices\""),
            (
                r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "fields": []}]}"#,
                "devices[0]",
                "neither",
            ),
            (
                r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "size": 1, "fields": [{"name": "a", "type": "uint8", "size": -1}]}]}"#,
                "devices[0].fields[0].size",
                "unsigned",
            ),
            (
                r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "size": 1, "fields": [{"name": "a", "type": "struct", "size": 1}]}]}"#,
                "devices[0].fields[0]",
                "without",
            ),
            (
                r#"{"page_size": 4096, "devices": [], "extra": 1}"#,
                "",
                "unexpected key",
            ),
        ];
        for (json, path, msg) in cases {
            let e = Description::from_json_bytes(json.as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "{json}");
            assert!(e.message.contains(msg), "{e}");
        }
        assert!(Description::from_json_bytes(b"{not json").is_err());
        let huge = vec![b' '; MAX_DESCRIPTION_LEN + 1];
        let e = Description::from_json_bytes(&huge).unwrap_err();
        assert!(e.message.contains("expected at most"), "{e}");
        // Nesting deeper than serde_json's limit is an error, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(Description::from_json_bytes(deep.as_bytes()).is_err());
    }
}
