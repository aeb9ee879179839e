//! LEB128 varints and length-prefixed strings for the log store's on-disk formats, with a
//! reader that never panics on malformed bytes.

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Where and why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated(pub usize);

pub struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }

    pub fn pos(&self) -> usize {
        self.i
    }

    pub fn remaining(&self) -> usize {
        self.b.len() - self.i
    }

    pub fn byte(&mut self) -> Result<u8, Truncated> {
        let v = *self.b.get(self.i).ok_or(Truncated(self.i))?;
        self.i += 1;
        Ok(v)
    }

    pub fn varint(&mut self) -> Result<u64, Truncated> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Truncated(self.i))
    }

    pub fn u64_le(&mut self) -> Result<u64, Truncated> {
        let s = self.b.get(self.i..self.i + 8).ok_or(Truncated(self.i))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        self.i += 8;
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64_le(&mut self) -> Result<i64, Truncated> {
        self.u64_le().map(|v| v as i64)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Truncated> {
        let len = self.varint()? as usize;
        let s = self.b.get(self.i..self.i.saturating_add(len)).ok_or(Truncated(self.i))?;
        self.i += len;
        Ok(s)
    }

    pub fn str(&mut self) -> Result<&'a str, Truncated> {
        let at = self.i;
        std::str::from_utf8(self.bytes()?).map_err(|_| Truncated(at))
    }

    /// A length-prefixed string as a `(start, end)` range of the buffer (not UTF-8 checked).
    pub fn str_range(&mut self) -> Result<(u32, u32), Truncated> {
        let len = self.varint()? as usize;
        let end = self.i.checked_add(len).filter(|&e| e <= self.b.len()).ok_or(Truncated(self.i))?;
        let r = (self.i as u32, end as u32);
        self.i = end;
        Ok(r)
    }

    /// A count of items of at least `min_size` bytes each, refused when the rest cannot hold it.
    pub fn count(&mut self, min_size: usize) -> Result<usize, Truncated> {
        let n = self.varint()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(Truncated(self.i));
        }
        Ok(n)
    }
}
