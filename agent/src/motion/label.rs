//! Connected components (8-connectivity) of a binary image, by runs: each row is cut
//! into runs of set pixels, runs touching a run of the row above are joined with
//! union-find, and each component's bounding box and pixel count are summed per run.
//! Motion masks are mostly empty, so rows are scanned eight bytes at a time.
//! Buffers are kept between frames: after the first frames nothing is allocated.

/// One component: bounding box (inclusive corners), pixel count and how many of its
/// pixels are set in the reference image (0 without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    pub area: u32,
    pub overlap: u32,
}

#[derive(Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    /// Exclusive.
    x1: u32,
}

#[derive(Default)]
pub struct Labeler {
    runs: Vec<Run>,
    parent: Vec<u32>,
    stats: Vec<Component>,
}

impl Labeler {
    /// Labels `img` (non-zero = set) and appends the components to `out` (cleared first),
    /// in the order of their first pixel in raster order. Rows whose entry in `rows` is
    /// false are known to be empty and are not scanned (an empty `rows` scans all).
    /// With a `reference` image of the same size (0/1), each component also counts its
    /// pixels set there (the detector's previous mask: did this blob persist?).
    pub fn label(
        &mut self,
        img: &[u8],
        width: usize,
        height: usize,
        rows: &[bool],
        reference: Option<&[u8]>,
        out: &mut Vec<Component>,
    ) {
        out.clear();
        self.runs.clear();
        self.parent.clear();
        let mut prev = 0..0;
        for (y, row) in img.chunks_exact(width).take(height).enumerate() {
            let start = self.runs.len();
            if rows.get(y).copied().unwrap_or(true) {
                find_runs(row, y as u32, &mut self.runs);
            }
            let cur = start..self.runs.len();
            // Join each run with the runs of the row above that touch it (8-connected:
            // [p0, p1) touches [x0, x1) when p0 <= x1 and p1 >= x0).
            let mut p = prev.start;
            for i in cur.clone() {
                self.parent.push(i as u32);
                let Run { x0, x1, .. } = self.runs[i];
                while p < prev.end && self.runs[p].x1 < x0 {
                    p += 1;
                }
                let mut q = p;
                while q < prev.end && self.runs[q].x0 <= x1 {
                    self.union(q as u32, i as u32);
                    q += 1;
                }
            }
            prev = cur;
        }
        // The root of a set is its smallest run index, so it is met first.
        self.stats.clear();
        for i in 0..self.runs.len() {
            let r = self.find(i as u32) as usize;
            let Run { y, x0, x1 } = self.runs[i];
            let at = y as usize * width;
            let overlap = reference.map_or(0, |r| {
                r[at + x0 as usize..at + x1 as usize]
                    .iter()
                    .map(|&v| u32::from(v != 0))
                    .sum()
            });
            if r == i {
                self.stats.push(Component {
                    x0,
                    y0: y,
                    x1: x1 - 1,
                    y1: y,
                    area: x1 - x0,
                    overlap,
                });
                // Reuse `parent` of a root to hold its index in `stats`.
                self.parent[i] = (self.stats.len() - 1) as u32 | ROOT;
            } else {
                let s = &mut self.stats[(self.parent[r] & !ROOT) as usize];
                s.x0 = s.x0.min(x0);
                s.x1 = s.x1.max(x1 - 1);
                s.y1 = y;
                s.area += x1 - x0;
                s.overlap += overlap;
            }
        }
        out.extend_from_slice(&self.stats);
    }

    fn find(&mut self, mut i: u32) -> u32 {
        loop {
            let p = self.parent[i as usize];
            if p & ROOT != 0 || p == i {
                return i;
            }
            let gp = self.parent[p as usize];
            if gp & ROOT == 0 {
                // Path halving.
                self.parent[i as usize] = gp;
            }
            i = p;
        }
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

/// Marks a root whose `parent` entry has been turned into an index into `stats`.
const ROOT: u32 = 1 << 31;

/// Appends the runs of non-zero bytes of `row`.
fn find_runs(row: &[u8], y: u32, runs: &mut Vec<Run>) {
    let mut open: Option<u32> = None;
    let mut words = row.chunks_exact(8);
    let mut x = 0u32;
    for word in &mut words {
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(word);
        let v = u64::from_ne_bytes(b8);
        // Whole words of zeros (the common case) or of set bytes need no byte loop.
        if v == 0 && open.is_none() {
            x += 8;
            continue;
        }
        if open.is_some() && word.iter().all(|&b| b != 0) {
            x += 8;
            continue;
        }
        for &b in word {
            step(b, x, y, &mut open, runs);
            x += 1;
        }
    }
    for &b in words.remainder() {
        step(b, x, y, &mut open, runs);
        x += 1;
    }
    if let Some(x0) = open {
        runs.push(Run { y, x0, x1: x });
    }
}

#[inline(always)]
fn step(b: u8, x: u32, y: u32, open: &mut Option<u32>, runs: &mut Vec<Run>) {
    match (*open, b != 0) {
        (None, true) => *open = Some(x),
        (Some(x0), false) => {
            runs.push(Run { y, x0, x1: x });
            *open = None;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pic: &[&str]) -> (Vec<u8>, usize, usize) {
        let w = pic[0].len();
        let img = pic
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'#')))
            .collect();
        (img, w, pic.len())
    }

    fn boxes(pic: &[&str]) -> Vec<(u32, u32, u32, u32, u32)> {
        let (img, w, h) = parse(pic);
        let mut out = Vec::new();
        Labeler::default().label(&img, w, h, &[], None, &mut out);
        out.iter()
            .map(|c| (c.x0, c.y0, c.x1, c.y1, c.area))
            .collect()
    }

    #[test]
    fn components_are_eight_connected_with_boxes_and_areas() {
        type Row<'a> = (&'a [&'a str], &'a [(u32, u32, u32, u32, u32)]);
        let rows: &[Row] = &[
            (&["....", "...."], &[]),
            (&["##..", "..##"], &[(0, 0, 3, 1, 4)]),
            (&["#.#", ".#.", "#.#"], &[(0, 0, 2, 2, 5)]),
            (&["#..#", "#..#"], &[(0, 0, 0, 1, 2), (3, 0, 3, 1, 2)]),
            // A U shape: two runs on top joined through the bottom row.
            (&["#...#", "#...#", "#####"], &[(0, 0, 4, 2, 9)]),
            // Two components where the right one starts first in a later row.
            (
                &["#.....", "#...##", "......", "..#..."],
                &[(0, 0, 0, 1, 2), (4, 1, 5, 1, 2), (2, 3, 2, 3, 1)],
            ),
            // An N shape that needs a union of two earlier roots.
            (&["#.#.#", "#.#.#", "#####"], &[(0, 0, 4, 2, 11)]),
        ];
        for (pic, want) in rows {
            assert_eq!(boxes(pic), want.to_vec(), "for {pic:?}");
        }
    }

    #[test]
    fn long_rows_with_words_of_zeros_and_ones_are_scanned_exactly() {
        let mut row = vec![0u8; 100];
        row[9..41].fill(1);
        row[63] = 1;
        row[99] = 1;
        let mut runs = Vec::new();
        find_runs(&row, 0, &mut runs);
        let got: Vec<(u32, u32)> = runs.iter().map(|r| (r.x0, r.x1)).collect();
        assert_eq!(got, vec![(9, 41), (63, 64), (99, 100)]);
    }

    #[test]
    fn labelling_and_overlap_agree_with_a_flood_fill_on_random_images() {
        let (w, h) = (37, 23);
        let mut seed = 12345u32;
        let mut lab = Labeler::default();
        let mut out = Vec::new();
        for _ in 0..50 {
            let img: Vec<u8> = (0..w * h)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    u8::from(seed >> 24 < 90)
                })
                .collect();
            let reference: Vec<u8> = (0..w * h)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    u8::from(seed >> 24 < 128)
                })
                .collect();
            let rows: Vec<bool> = img.chunks(w).map(|r| r.iter().any(|&v| v != 0)).collect();
            lab.label(&img, w, h, &rows, Some(&reference), &mut out);
            let mut got: Vec<_> = out
                .iter()
                .map(|c| (c.y0, c.x0, c.x1, c.y1, c.area, c.overlap))
                .collect();
            let mut want = flood(&img, &reference, w, h);
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
    }

    fn flood(
        img: &[u8],
        reference: &[u8],
        w: usize,
        h: usize,
    ) -> Vec<(u32, u32, u32, u32, u32, u32)> {
        let mut seen = vec![false; w * h];
        let mut out = Vec::new();
        for start in 0..w * h {
            if img[start] == 0 || seen[start] {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1, mut area, mut overlap) = (w, h, 0, 0, 0, 0);
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
                area += 1;
                overlap += u32::from(reference[i] != 0);
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                        if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h {
                            let j = ny as usize * w + nx as usize;
                            if img[j] != 0 && !seen[j] {
                                seen[j] = true;
                                stack.push(j);
                            }
                        }
                    }
                }
            }
            out.push((y0 as u32, x0 as u32, x1 as u32, y1 as u32, area, overlap));
        }
        out
    }
}
