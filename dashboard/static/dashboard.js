// Selecting every letter of a page with one box; the page works without it.
document.addEventListener("DOMContentLoaded", function () {
  var page = document.getElementById("select-page");
  if (!page) return;
  page.addEventListener("change", function () {
    document.querySelectorAll('#dead-letters input[name="id"]').forEach(function (box) { box.checked = page.checked; });
  });
});
