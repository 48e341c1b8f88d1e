//! A list of byte strings packed into a deque of nodes (like Redis's
//! quicklist of listpacks).
//!
//! Owns the list's in-memory representation: each node is one contiguous
//! buffer of elements, each element a LEB128 length followed by its bytes,
//! and a node takes elements until it holds [`NODE_BYTES`] bytes (an
//! element larger than that gets a node of its own). A 14-byte element
//! costs 15 bytes instead of a separate heap block plus a pointer in a
//! deque. Pushes and pops at either end touch only the end node
//! (O(node)); an index walks node counts from the nearer end, then one
//! node. Iteration in either direction is O(1) per element amortized.
//!
//! Must never: change the order of elements, or expose its encoding
//! outside the store (callers see `&[u8]` elements only).

use std::collections::VecDeque;
use std::ops::Range;

/// Bytes a node holds before the next element goes into a new node.
pub const NODE_BYTES: usize = 4096;

/// One node: packed `(LEB128 len, bytes)*` and its element count.
#[derive(Debug, Default, Clone)]
struct Node {
    buf: Vec<u8>,
    count: u32,
}

fn varint_len(n: usize) -> usize {
    let mut n = n >> 7;
    let mut len = 1;
    while n != 0 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The element at byte `pos` of `buf`: (its bytes' start, its end).
#[inline]
fn entry_at(buf: &[u8], pos: usize) -> (usize, usize) {
    let b = buf[pos];
    if b < 0x80 {
        return (pos + 1, pos + 1 + b as usize);
    }
    let mut n = 0usize;
    let mut shift = 0;
    let mut p = pos;
    loop {
        let b = buf[p];
        n |= ((b & 0x7f) as usize) << shift;
        p += 1;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    (p, p + n)
}

impl Node {
    /// Grows the buffer for `extra` more bytes: doubling up to the node
    /// size, never past what a full node needs, so a small list stays
    /// small and a full node wastes little.
    fn grow(&mut self, extra: usize) {
        let need = self.buf.len() + extra;
        if need > self.buf.capacity() {
            let target = need.max(self.buf.capacity() * 2).min(NODE_BYTES.max(need));
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    fn push_back(&mut self, item: &[u8]) {
        self.grow(varint_len(item.len()) + item.len());
        put_varint(&mut self.buf, item.len());
        self.buf.extend_from_slice(item);
        self.count += 1;
    }

    fn push_front(&mut self, item: &[u8]) {
        let mut head = Vec::with_capacity(varint_len(item.len()) + item.len());
        put_varint(&mut head, item.len());
        head.extend_from_slice(item);
        self.grow(head.len());
        self.buf.splice(0..0, head);
        self.count += 1;
    }

    /// Byte offsets of every element, in order.
    fn offsets(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.count as usize);
        let mut pos = 0;
        while pos < self.buf.len() {
            out.push(pos as u32);
            pos = entry_at(&self.buf, pos).1;
        }
        out
    }

    /// Byte offset of element `i` (< count).
    fn offset_of(&self, i: usize) -> usize {
        let mut pos = 0;
        for _ in 0..i {
            pos = entry_at(&self.buf, pos).1;
        }
        pos
    }

    fn get(&self, i: usize) -> &[u8] {
        let (s, e) = entry_at(&self.buf, self.offset_of(i));
        &self.buf[s..e]
    }

    fn pop_front(&mut self) -> Box<[u8]> {
        let (s, e) = entry_at(&self.buf, 0);
        let item = self.buf[s..e].into();
        self.buf.drain(..e);
        self.count -= 1;
        item
    }

    fn pop_back(&mut self) -> Box<[u8]> {
        let at = self.offset_of(self.count as usize - 1);
        let (s, e) = entry_at(&self.buf, at);
        let item = self.buf[s..e].into();
        self.buf.truncate(at);
        self.count -= 1;
        item
    }

    /// Replaces element `i` and returns the old one.
    fn set(&mut self, i: usize, item: &[u8]) -> Box<[u8]> {
        let at = self.offset_of(i);
        let (s, e) = entry_at(&self.buf, at);
        let old: Box<[u8]> = self.buf[s..e].into();
        let mut new = Vec::with_capacity(varint_len(item.len()) + item.len());
        put_varint(&mut new, item.len());
        new.extend_from_slice(item);
        if new.len() > e - at {
            self.grow(new.len() - (e - at));
        }
        self.buf.splice(at..e, new);
        old
    }
}

/// A list of byte strings, head first (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct PackedList {
    nodes: VecDeque<Node>,
    len: usize,
}

impl PackedList {
    /// An empty list.
    pub fn new() -> PackedList {
        PackedList::default()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if it has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.len = 0;
    }

    /// Appends at the tail.
    pub fn push_back(&mut self, item: &[u8]) {
        let entry = varint_len(item.len()) + item.len();
        match self.nodes.back_mut() {
            Some(n) if n.buf.len() + entry <= NODE_BYTES => n.push_back(item),
            _ => {
                let mut n = Node::default();
                n.push_back(item);
                self.nodes.push_back(n);
            }
        }
        self.len += 1;
    }

    /// Prepends at the head.
    pub fn push_front(&mut self, item: &[u8]) {
        let entry = varint_len(item.len()) + item.len();
        match self.nodes.front_mut() {
            Some(n) if n.buf.len() + entry <= NODE_BYTES => n.push_front(item),
            _ => {
                let mut n = Node::default();
                n.push_back(item);
                self.nodes.push_front(n);
            }
        }
        self.len += 1;
    }

    /// Removes and returns the head element.
    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let node = self.nodes.front_mut()?;
        let item = node.pop_front();
        if node.count == 0 {
            self.nodes.pop_front();
        }
        self.len -= 1;
        Some(item)
    }

    /// Removes and returns the tail element.
    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let node = self.nodes.back_mut()?;
        let item = node.pop_back();
        if node.count == 0 {
            self.nodes.pop_back();
        }
        self.len -= 1;
        Some(item)
    }

    /// The node holding element `i` (< len) and its index in that node,
    /// walking from the nearer end.
    fn locate(&self, i: usize) -> (usize, usize) {
        if i < self.len / 2 {
            let mut i = i;
            for (n, node) in self.nodes.iter().enumerate() {
                if i < node.count as usize {
                    return (n, i);
                }
                i -= node.count as usize;
            }
        } else {
            let mut from_end = self.len - 1 - i;
            for (n, node) in self.nodes.iter().enumerate().rev() {
                if from_end < node.count as usize {
                    return (n, node.count as usize - 1 - from_end);
                }
                from_end -= node.count as usize;
            }
        }
        unreachable!("index {i} below len {}", self.len)
    }

    /// Element `i` (head is 0).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        let (n, j) = self.locate(i);
        Some(self.nodes[n].get(j))
    }

    /// The head element.
    pub fn front(&self) -> Option<&[u8]> {
        self.get(0)
    }

    /// The tail element.
    pub fn back(&self) -> Option<&[u8]> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Replaces element `i` and returns the old one (`None`: out of range,
    /// nothing changed).
    pub fn set(&mut self, i: usize, item: &[u8]) -> Option<Box<[u8]>> {
        if i >= self.len {
            return None;
        }
        let (n, j) = self.locate(i);
        Some(self.nodes[n].set(j, item))
    }

    /// Every element, head first (reversible).
    pub fn iter(&self) -> Iter<'_> {
        self.range(0..self.len)
    }

    /// The elements at positions `r` (clamped to the list), head first
    /// (reversible).
    pub fn range(&self, r: Range<usize>) -> Iter<'_> {
        let end = r.end.min(self.len);
        let start = r.start.min(end);
        let mut it = Iter {
            list: self,
            front: start,
            back: end,
            f_node: 0,
            f_pos: 0,
            b_node: usize::MAX,
            b_offsets: Vec::new(),
            b_primed: false,
        };
        if start < end {
            let (n, j) = self.locate(start);
            it.f_node = n;
            it.f_pos = self.nodes[n].offset_of(j);
        }
        it
    }

    /// Bytes this list's heap blocks hold (node buffers' capacity and the
    /// node deque), for measurements.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>() + self.nodes.iter().map(|n| n.buf.capacity()).sum::<usize>()
    }
}

impl<A: AsRef<[u8]>> FromIterator<A> for PackedList {
    fn from_iter<T: IntoIterator<Item = A>>(iter: T) -> Self {
        let mut l = PackedList::new();
        for i in iter {
            l.push_back(i.as_ref());
        }
        l
    }
}

impl std::ops::Index<usize> for PackedList {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        self.get(i).unwrap_or_else(|| panic!("list index {i} out of range (len {})", self.len))
    }
}

impl PartialEq for PackedList {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for PackedList {}

/// Iterator over a [`PackedList`]'s elements (see [`PackedList::range`]).
pub struct Iter<'a> {
    list: &'a PackedList,
    /// Global index of the next element from the front.
    front: usize,
    /// Global index one past the next element from the back.
    back: usize,
    /// The front cursor: node and byte offset.
    f_node: usize,
    f_pos: usize,
    /// The back cursor: node and the offsets of its elements not yet
    /// returned from the back (taken from the end).
    b_node: usize,
    b_offsets: Vec<u32>,
    b_primed: bool,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.front >= self.back {
            return None;
        }
        let nodes = &self.list.nodes;
        while self.f_pos >= nodes[self.f_node].buf.len() {
            self.f_node += 1;
            self.f_pos = 0;
        }
        let buf = &nodes[self.f_node].buf;
        let (s, e) = entry_at(buf, self.f_pos);
        self.f_pos = e;
        self.front += 1;
        Some(&buf[s..e])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }

    fn nth(&mut self, n: usize) -> Option<&'a [u8]> {
        // Skip whole nodes by count when the skip is long.
        if n > 0 && self.front + n < self.back && n > 64 {
            let target = self.front + n;
            let (node, j) = self.list.locate(target);
            self.f_node = node;
            self.f_pos = self.list.nodes[node].offset_of(j);
            self.front = target;
            return self.next();
        }
        for _ in 0..n {
            self.next()?;
        }
        self.next()
    }
}

impl<'a> DoubleEndedIterator for Iter<'a> {
    fn next_back(&mut self) -> Option<&'a [u8]> {
        if self.front >= self.back {
            return None;
        }
        let nodes = &self.list.nodes;
        if !self.b_primed {
            // The node holding element back-1, and the offsets of its
            // elements up to that one.
            let (n, j) = self.list.locate(self.back - 1);
            self.b_node = n;
            self.b_offsets = nodes[n].offsets();
            self.b_offsets.truncate(j + 1);
            self.b_primed = true;
        }
        while self.b_offsets.is_empty() {
            self.b_node -= 1;
            self.b_offsets = nodes[self.b_node].offsets();
        }
        let buf = &nodes[self.b_node].buf;
        let at = self.b_offsets.pop().expect("non-empty") as usize;
        let (s, e) = entry_at(buf, at);
        self.back -= 1;
        Some(&buf[s..e])
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packed list and a `VecDeque` model given the same random pushes,
    /// pops, sets, indexes and ranges agree after every step.
    #[test]
    fn packed_list_behaves_like_a_deque_of_elements() {
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r % n
        };
        let mut l = PackedList::new();
        let mut m: VecDeque<Vec<u8>> = VecDeque::new();
        for step in 0..20_000u64 {
            // Mostly small elements, some past a varint byte, a few past a node.
            let size = match next(20) {
                0 => 200 + next(300) as usize,
                1 => NODE_BYTES + next(100) as usize,
                _ => next(20) as usize,
            };
            let item: Vec<u8> = (0..size).map(|k| (step as usize + k) as u8).collect();
            match next(8) {
                0 | 1 => {
                    l.push_back(&item);
                    m.push_back(item);
                }
                2 | 3 => {
                    l.push_front(&item);
                    m.push_front(item);
                }
                4 => assert_eq!(l.pop_front().map(|b| b.to_vec()), m.pop_front()),
                5 => assert_eq!(l.pop_back().map(|b| b.to_vec()), m.pop_back()),
                6 if !m.is_empty() => {
                    let i = next(m.len() as u64) as usize;
                    assert_eq!(l.set(i, &item).map(|b| b.to_vec()), Some(std::mem::replace(&mut m[i], item)));
                }
                _ => {
                    let i = next(m.len() as u64 + 2) as usize;
                    assert_eq!(l.get(i), m.get(i).map(|v| &v[..]));
                }
            }
            assert_eq!(l.len(), m.len());
            if step % 97 == 0 {
                assert!(l.iter().eq(m.iter().map(|v| &v[..])));
                assert!(l.iter().rev().eq(m.iter().rev().map(|v| &v[..])));
                let a = next(m.len() as u64 + 3) as usize;
                let b = a + next(m.len() as u64 + 3) as usize;
                let want: Vec<&[u8]> = m.iter().skip(a).take(b - a).map(|v| &v[..]).collect();
                assert_eq!(l.range(a..b).collect::<Vec<_>>(), want);
                assert_eq!(l.range(a..b).rev().collect::<Vec<_>>(), want.iter().rev().copied().collect::<Vec<_>>());
                assert_eq!(l.range(a..b).len(), want.len());
                // Both ends consumed alternately meet in the middle.
                let mut it = l.range(a..b);
                let mut got = (Vec::new(), Vec::new());
                while let Some(x) = it.next() {
                    got.0.push(x);
                    match it.next_back() {
                        Some(x) => got.1.push(x),
                        None => break,
                    }
                }
                got.1.reverse();
                got.0.extend(got.1);
                assert_eq!(got.0, want);
                let k = next(m.len() as u64 + 200) as usize;
                assert_eq!(l.iter().nth(k), m.get(k).map(|v| &v[..]));
            }
        }
    }

    /// Small elements cost their bytes plus one length byte, plus a small
    /// share of a node.
    #[test]
    fn a_million_small_elements_take_about_their_bytes_plus_one() {
        let l: PackedList = (0..1_000_000).map(|i| format!("element:{i}")).collect();
        let payload: usize = (0..1_000_000).map(|i| format!("element:{i}").len() + 1).sum();
        assert_eq!(l.len(), 1_000_000);
        assert!(l.heap_bytes() < payload + payload / 50, "{} bytes for {payload}", l.heap_bytes());
        assert_eq!(l.get(765_432), Some(&b"element:765432"[..]));
    }
}
