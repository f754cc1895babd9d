//! Aligned text tables for people; scripts use `--json`.

/// A table: headers in `UPPER_SNAKE` (the same words everywhere), each
/// column as wide as its widest cell, two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    /// Columns whose cells are right-aligned (numbers).
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), right: Vec::new(), rows: Vec::new() }
    }

    /// Right-aligns column `i`.
    pub fn right(mut self, i: usize) -> Table {
        self.right.push(i);
        self
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines, header first, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let n = self.headers.len();
        let cell = |r: &Vec<String>, i: usize| r.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(r, i).chars().count());
            }
        }
        let fmt = |cells: Vec<String>| {
            let mut line = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                if self.right.contains(&i) {
                    line.push_str(&pad);
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            line.trim_end().to_owned()
        };
        let mut out = vec![fmt(self.headers.iter().map(|h| (*h).to_owned()).collect())];
        out.extend(self.rows.iter().map(|r| fmt((0..n).map(|i| cell(r, i)).collect())));
        out
    }

    /// Prints the table.
    pub fn print(&self) {
        for l in self.lines() {
            outln!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let mut t = Table::new(&["NAME", "REF_FILE", "BLOBS"]).right(2);
        t.row(vec!["a-very-long-manifest-name".into(), "x.json".into(), "7".into()]);
        t.row(vec!["b".into(), "b-0123456789ab.json".into(), "12345".into()]);
        let lines = t.lines();
        let col = lines[0].find("REF_FILE").unwrap();
        assert!(lines[1][col..].starts_with("x.json") && lines[2][col..].starts_with("b-0123"), "{lines:#?}");
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(ends.iter().all(|e| *e == ends[0]), "the right-aligned last column ends in one place: {lines:#?}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }
}
