//! A tiny aligned text table for the human output of `cos readside`; enough for a handful of columns, no
//! dependency for it.

/// Column gap of the tables.
const GAP: &str = "  ";

/// A minimal text table: a header row and left-aligned columns, no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and no rows.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty, extra cells are ignored.
    pub fn push_row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as lines ending in `\n`, each column as wide as its widest cell (in characters).
    pub fn render(&self) -> String {
        let column_count = self.headers.len();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|header| header.chars().count())
            .collect();
        for row in &self.rows {
            for (column, cell) in row.iter().take(column_count).enumerate() {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
        let mut output = String::new();
        render_line(&mut output, &self.headers, &widths);
        for row in &self.rows {
            render_line(&mut output, row, &widths);
        }
        output
    }
}

fn render_line(output: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (column, width) in widths.iter().enumerate() {
        let cell = cells.get(column).map(String::as_str).unwrap_or("");
        if column > 0 {
            line.push_str(GAP);
        }
        line.push_str(cell);
        let padding = width.saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', padding));
    }
    output.push_str(line.trim_end());
    output.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATE", "NOTE"]);
        table.push_row(vec!["accounts".into(), "running".into(), "".into()]);
        table.push_row(vec!["x".into(), "paused".into(), "by ops".into()]);
        assert_eq!(
            table.render(),
            "ID        STATE    NOTE\n\
             accounts  running\n\
             x         paused   by ops\n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut table = Table::new(&["A", "B"]);
        table.push_row(vec!["\u{e9}\u{e9}\u{e9}".into(), "1".into()]);
        table.push_row(vec!["abcd".into(), "2".into()]);
        assert_eq!(table.render(), "A     B\n\u{e9}\u{e9}\u{e9}   1\nabcd  2\n");
    }

    #[test]
    fn short_rows_print_empty_cells_and_long_rows_are_cut() {
        let mut table = Table::new(&["A", "B"]);
        table.push_row(vec!["1".into()]);
        table.push_row(vec!["2".into(), "3".into(), "ignored".into()]);
        assert_eq!(table.render(), "A  B\n1\n2  3\n");
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(Table::new(&["SHARD", "OFFSET"]).render(), "SHARD  OFFSET\n");
    }
}
